"""The command line: `dump` on this GPU-less machine, and --mig-strategy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from gpufixtures import FIXTURES

from nodefeatures.cli import main

PROBE = """
import sys
from nodefeatures.cli import main
try:
    main(["dump", "--format", "json"])
except SystemExit as exit:
    code = exit.code
print("PYNVML" if "pynvml" in sys.modules else "NO-PYNVML", file=sys.stderr)
sys.exit(code)
"""


def nvidia_on_this_machine() -> bool:
    for vendor in Path("/sys/bus/pci/devices").glob("*/vendor"):
        try:
            if vendor.read_text().strip() == "0x10de":
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(nvidia_on_this_machine(), reason="this machine has an NVIDIA device")
def test_dump_without_a_gpu_says_why_once_and_never_loads_pynvml() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout)
    assert not [k for k in labels if k.startswith("nvidia.com/")]
    lines = [line for line in done.stderr.splitlines() if "nvidia" in line]
    assert len(lines) == 1, done.stderr
    assert "no NVIDIA GPU" in lines[0]
    assert done.stderr.splitlines()[-1] == "NO-PYNVML"


def dump(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(main, ["dump", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_mig_strategy_flag_overrides_the_config_file(tmp_path: Path) -> None:
    fixture = str(FIXTURES / "dgx-a100-mig-single")
    config = tmp_path / "config.yaml"
    config.write_text("sources:\n  nvidia:\n    migStrategy: mixed\n")
    assert dump("--fixture", fixture, "--config", str(config))[
        "nvidia.com/mig.strategy"] == "mixed"
    single = dump("--fixture", fixture, "--config", str(config), "--mig-strategy", "single")
    assert single["nvidia.com/mig.strategy"] == "single"
    assert single["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert "nvidia.com/mig.strategy" not in dump("--fixture", fixture, "--mig-strategy", "none")


def test_mig_strategy_flag_accepts_only_strategies() -> None:
    result = CliRunner().invoke(main, ["dump", "--mig-strategy", "bogus"])
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_mig_strategy_flag_without_the_nvidia_source_is_harmless() -> None:
    labels = dump("--fixture", str(FIXTURES / "dgx-h100"), "--source", "system",
                  "--mig-strategy", "mixed")
    assert labels and not [k for k in labels if k.startswith("nvidia.com/")]
