"""GFD's options as docs/labels.md documents them, beside the nvidia labels they change.

Each entry names file keys of GFD's `version: v1` file (gfdconfig reads them); the
environment variables come from gfdconfig.ENVIRONMENT, so the two cannot disagree, and
a test checks that every accepted key is documented here and nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodefeatures.discovery import gfdconfig

_MIG = ("nvidia.com/mig-<PROFILE>.count", "nvidia.com/mig-<PROFILE>.product",
        "nvidia.com/mig-<PROFILE>.memory", "nvidia.com/mig-<PROFILE>.replicas",
        "nvidia.com/mig-<PROFILE>.sharing-strategy",
        "nvidia.com/mig-<PROFILE>.multiprocessors", "nvidia.com/mig-<PROFILE>.slices.gi",
        "nvidia.com/mig-<PROFILE>.slices.ci", "nvidia.com/mig-<PROFILE>.engines.copy",
        "nvidia.com/mig-<PROFILE>.engines.decoder",
        "nvidia.com/mig-<PROFILE>.engines.encoder", "nvidia.com/mig-<PROFILE>.engines.jpeg",
        "nvidia.com/mig-<PROFILE>.engines.ofa")
_SINGLE = ("nvidia.com/gpu.multiprocessors", "nvidia.com/gpu.slices.gi",
           "nvidia.com/gpu.slices.ci", "nvidia.com/gpu.engines.copy",
           "nvidia.com/gpu.engines.decoder", "nvidia.com/gpu.engines.encoder",
           "nvidia.com/gpu.engines.jpeg", "nvidia.com/gpu.engines.ofa")
_SHARED = ("nvidia.com/gpu.replicas", "nvidia.com/gpu.sharing-strategy",
           "nvidia.com/gpu.product", "nvidia.com/mig-<PROFILE>.replicas",
           "nvidia.com/mig-<PROFILE>.sharing-strategy", "nvidia.com/mig-<PROFILE>.product")


@dataclass(frozen=True)
class GfdOption:
    """Keys of GFD's file that act alike, what they do here, and the labels they change."""

    keys: tuple[str, ...]
    effect: str
    labels: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        """GFD's environment variables for these keys, the one GFD reads first first."""
        return tuple(v for name, names in gfdconfig.ENVIRONMENT.items()
                     if gfdconfig.environment_key(name) in self.keys for v in names)


def _strategy(flag: str) -> tuple[str, ...]:
    return tuple(f"sharing.{s}.{flag}" for s in gfdconfig.SHARING_STRATEGIES)


OPTIONS: tuple[GfdOption, ...] = (
    GfdOption(("flags.migStrategy",),
              "`none`, `single` or `mixed`: sources.nvidia.migStrategy (`--mig-strategy` "
              "wins). `single` describes the node's MIG devices as `nvidia.com/gpu` "
              "(`gpu.product` `<product>-MIG-<profile>`, `gpu.count` the MIG devices, or "
              "`-MIG-INVALID` with count 0 where the GPUs' MIG layouts differ); `mixed` adds "
              "the `mig-<PROFILE>.*` labels per profile; `none` labels whole GPUs only",
              ("nvidia.com/mig.strategy", "nvidia.com/gpu.count", "nvidia.com/gpu.product",
               "nvidia.com/gpu.memory", "nvidia.com/gpu.replicas",
               "nvidia.com/gpu.sharing-strategy", *_SINGLE, *_MIG)),
    GfdOption(("sharing.timeSlicing.resources", "sharing.mps.resources"),
              "sources.nvidia.sharing: the resources shared and their `replicas` (at least "
              "2; per-resource `rename` and `devices` are dropped with a notice, as GFD "
              "drops them). A shared resource gets its replicas and strategy "
              "(`time-slicing`, `mps`), and its product the suffix `-SHARED` unless it is "
              "renamed; `mps.capable` is true while MPS shares one and no GPU has MIG "
              "enabled",
              (*_SHARED, "nvidia.com/mps.capable")),
    GfdOption(_strategy("renameByDefault"),
              "true: the shared resources are renamed `<name>.shared`, so their product "
              "keeps its plain name, without `-SHARED`",
              ("nvidia.com/gpu.product", "nvidia.com/mig-<PROFILE>.product")),
    GfdOption(_strategy("failRequestsGreaterThanOne"),
              "the device plugin's (MPS defaults it to true, as GFD does); checked, no label "
              "depends on it"),
    GfdOption(("flags.gfd.noTimestamp",),
              "sources.nvidia.timestampLabel = not noTimestamp. Unset, the agent's default "
              "stays: no `gfd.timestamp`",
              ("nvidia.com/gfd.timestamp",)),
    GfdOption(("flags.gfd.machineTypeFile",),
              "sources.nvidia.machineTypeFile, the file whose first line is the machine "
              "name (read under `--root`)",
              ("nvidia.com/gpu.machine",)),
    GfdOption(("flags.gfd.sleepInterval",),
              "core.sleepInterval, a Go duration within 1 s..24 h (in the file a bare number "
              "is nanoseconds, as in GFD); `infinite` becomes 24 h with a notice. When "
              "labels are refreshed, not what they say"),
    GfdOption(("flags.gfd.oneshot",), "`run` does one pass and exits"),
    GfdOption(("flags.failOnInitError",),
              "noticed and ignored: the agent never exits when NVML fails; the nvidia "
              "source keeps its labels and tries again each pass"),
    GfdOption(("flags.gfd.outputFile",),
              "noticed and ignored: the agent labels the Node itself (`run --output-file` "
              "writes a features.d file instead)"),
    GfdOption(("flags.useNodeFeatureAPI",),
              "noticed and ignored: the agent patches the Node, with no NodeFeature object"),
    GfdOption(("flags.deviceDiscoveryStrategy",),
              "`auto`, `nvml`, `tegra` or `vfio`; other than `auto` noticed and ignored: the "
              "nvidia source finds PCI, Tegra and WSL2 GPUs by itself"),
    GfdOption(("resources.gpus", "resources.mig"),
              "ignored with a notice, as GFD ignores them (no resource renaming there)"),
    GfdOption(("flags.mpsRoot", "flags.nvidiaDriverRoot", "flags.nvidiaDevRoot",
               "flags.gdrcopyEnabled", "flags.gdsEnabled", "flags.mofedEnabled",
               "flags.plugin.passDeviceSpecs", "flags.plugin.deviceListStrategy",
               "flags.plugin.deviceIDStrategy", "flags.plugin.cdiAnnotationPrefix",
               "flags.plugin.nvidiaCTKPath", "flags.plugin.containerDriverRoot",
               "flags.plugin.sharedDevicesAllocationPolicy", "imex.channelIDs",
               "imex.required"),
              "the device plugin's: type-checked and ignored quietly, as GFD ignores them"),
    GfdOption(("version",),
              "`v1` (or empty); a top-level `version` key is how `--config` tells GFD's "
              "file from ours and nfd-worker's"),
)


# How the settings combine, said once in docs/labels.md above the options.
PRECEDENCE = (
    "GFD's config file is found as GFD finds it: `--config` naming a file with a top-level "
    "`version` key, `--gfd-config`, or the first of "
    + ", ".join(f"`${v}`" for v in gfdconfig.FILE_ENVIRONMENT)
    + " that is set. Precedence, highest first: our command-line flags (`--mig-strategy`, "
    "`--interval`, `--source`, `--skip-source`), then GFD's environment variables (of "
    "those for one setting, the first set wins), then GFD's config file, then our (or "
    "nfd-worker's) "
    "config file, then the defaults. A problem anywhere rejects the whole configuration, "
    "naming the key or variable; docs/configuration.md has the rest.")


def options_for(label: str) -> list[GfdOption]:
    """The options that change `label` (a catalogue row's name)."""
    return [option for option in OPTIONS if label in option.labels]
