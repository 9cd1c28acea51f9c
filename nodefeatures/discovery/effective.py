"""The configuration in force: our (or nfd-worker's) config file, GFD's config file and
GFD's environment variables, merged by GFD's precedence and validated as a whole.

`--config` may name either kind of file: one with a top-level `version` key is GFD's
(device plugin's) file, anything else ours or nfd-worker's. `--gfd-config` (or GFD's own
GFD_CONFIG_FILE / CONFIG_FILE) names GFD's file beside a config of ours. GFD's settings
win over the config file's for the options they map to, its environment over its file;
the caller's command-line flags (--mig-strategy, --interval, --source) win over all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nodefeatures.discovery import config as configuration
from nodefeatures.discovery import gfdconfig
from nodefeatures.discovery.config import Config, ConfigError
from nodefeatures.discovery.source import Source


def gfd_file_from(env: Mapping[str, str]) -> str | None:
    """GFD's config file as its environment names it, if it does."""
    for variable in gfdconfig.FILE_ENVIRONMENT:
        if env.get(variable):
            return env[variable]
    return None


def load(path: str | Path | None, sources: Mapping[str, Source], *,
         gfd_path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The validated configuration; ConfigError names the file and key of each problem."""
    env = os.environ if env is None else env
    data, file = configuration.read_data(path)
    gfd_data, gfd_origin = None, "GFD environment"
    if gfdconfig.is_gfd_file(data):
        gfd_data, gfd_origin, data = data, str(file), None
    if gfd_path is None:
        gfd_path = gfd_file_from(env)
    if gfd_path is not None:
        if gfd_data is not None:
            raise ConfigError(f"{file} is GFD's config file, and so is {gfd_path}: name "
                              "one of them")
        gfd_data, gfd_file = configuration.read_data(gfd_path)
        gfd_origin = str(gfd_file)
    # GFD's file gets the bounds ours gets: depth, size with aliases, finite numbers.
    shape = configuration.shape_problems(gfd_data) if gfd_data is not None else []
    if shape:
        raise ConfigError(f"{gfd_origin}: {'; '.join(shape)}")
    try:
        gfd = gfdconfig.settings(gfd_data, env, gfd_origin)
    except gfdconfig.GfdConfigError as exc:
        raise ConfigError(str(exc)) from None
    merged = gfd.apply({} if data is None else data, sources)
    try:
        config = configuration.build(merged, sources)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}" if file is not None and data is not None
                          else str(exc)) from None
    config.path = str(file) if file is not None else None
    config.oneshot = gfd.oneshot
    config.notices += gfd.notices
    return config
