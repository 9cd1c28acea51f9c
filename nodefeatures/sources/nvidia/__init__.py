"""nvidia: the labels of NVIDIA GPU Feature Discovery, from NVML through nvidia-ml-py.

The source instance lives as long as the agent: it keeps the retry backoff, the MIG
profile tables and the PCI scan between passes, and NVML runs on one process-wide
worker thread (nvml.py). Nodes without an NVIDIA GPU on the PCI bus never import pynvml,
unless host files show a GPU that is no PCI function: a Tegra SoC or WSL2.

Layout: pci.py (the bus and vGPU config space), platform.py (Tegra and WSL2 from host
files), nvml.py (pynvml, the worker, sessions,
backoff), replay.py (nvml.json, the replayed library, the capture recorder),
discover.py (NVML facts), mig.py and sharing.py (GFD's MIG and sharing rules),
labels.py (facts into labels).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

from .pci import PciScan, PciScanner
from .platform import TEGRA, TEGRA_RELEASE, Platform, cuda_name, detect, is_integrated_name

if TYPE_CHECKING:
    from .discover import Snapshot
    from .nvml import Outcome, Session

log = logging.getLogger(__name__)

STRATEGIES = ("none", "single", "mixed")
# Seconds; NVML answers in well under a minute even on the largest machines.
NVML_TIMEOUT_MAX = 3600
VIRTUALIZATION_VGPU = 2  # NVML_GPU_VIRTUALIZATION_MODE_VGPU: a vGPU inside a VM
TEGRA_DRIVER = "unknown.unknown.unknown"  # GFD's driver version on Tegra, where CUDA answers
# Feature names in Features.attributes
_NODE = "node"
_NVML = "nvml"


def _row(name: str, values: str, origin: str, deviation: str = "") -> LabelDoc:
    return LabelDoc("nvidia.com/" + name, values, origin, deviation)


_PER_GPU_ERRORS = (
    "per-GPU errors (GFD fails the whole pass on any): a GPU whose {call} query fails "
    "is skipped with a warning and another GPU of the model gives the value; when none "
    "answered the label is left out and the pass is incomplete, so the last value stays "
    "on the Node (NOT_SUPPORTED from every GPU is an answer: the label is absent)")

CATALOGUE = (
    _row("gpu.present", "true",
         "an NVIDIA (vendor 0x10de) display-class function under /sys/bus/pci/devices, "
         "a GPU that NVML enumerates, or a Tegra SoC (see gpu.platform)",
         "GFD only reads this label, but the GPU Operator writes it too: `true` where NFD's "
         "`pci-10de`, `pci-0300_10de` or `pci-0302_10de` label shows an NVIDIA device, "
         "`false` on a node it labelled that no longer has one (the pci source's default "
         "labels include the one it looks for, so both agree on a GPU node). Published "
         "here from the PCI bus as well, so a node whose driver is not installed yet still "
         "gets it; where the Operator wrote it first the key stays the Operator's (an equal "
         "value is not claimed, a different one, such as its `false`, is left alone with a "
         "LabelConflict warning) unless --take-over adopts it"),
    _row("gfd.timestamp", "Unix seconds",
         "time of the source's first pass, constant afterwards",
         "off by default (sources.nvidia.timestampLabel: true restores it): a timestamp "
         "label makes every Node watcher see a change"),
    _row("cuda.driver-version.major", "decimal", "nvmlSystemGetDriverVersion, first part"),
    _row("cuda.driver-version.minor", "decimal", "nvmlSystemGetDriverVersion, second part"),
    _row("cuda.driver-version.revision", "string or empty",
         "nvmlSystemGetDriverVersion, third part verbatim (`03` keeps its zero)"),
    _row("cuda.driver-version.full", "string", "nvmlSystemGetDriverVersion",
         "a version without two or three dot-separated parts costs only the driver "
         "labels, with a warning (GFD fails the pass)"),
    _row("cuda.driver.major", "decimal", "deprecated alias of cuda.driver-version.major"),
    _row("cuda.driver.minor", "decimal", "deprecated alias of cuda.driver-version.minor"),
    _row("cuda.driver.rev", "string or empty",
         "deprecated alias of cuda.driver-version.revision"),
    _row("cuda.runtime-version.major", "decimal",
         "nvmlSystemGetCudaDriverVersion // 1000 (the CUDA version the driver supports)"),
    _row("cuda.runtime-version.minor", "decimal", "nvmlSystemGetCudaDriverVersion % 1000 // 10"),
    _row("cuda.runtime-version.full", "`<major>.<minor>`", "nvmlSystemGetCudaDriverVersion"),
    _row("cuda.runtime.major", "decimal", "deprecated alias of cuda.runtime-version.major"),
    _row("cuda.runtime.minor", "decimal", "deprecated alias of cuda.runtime-version.minor"),
    _row("gpu.count", "decimal",
         "healthy GPUs of the most common model (`0` for an invalid single MIG strategy; "
         "the number of MIG devices under a valid one)",
         "on a node with several models GFD picks one at random; here the most common model "
         "wins, ties going to the NVML name that sorts first, and lost GPUs are not counted"),
    _row("gpu.count.<PRODUCT>", "decimal",
         "healthy GPUs of each model, keyed by its product name as in gpu.product",
         "not in GFD: tells every model of a mixed node apart"),
    *(
        _row(f"{name}.<PRODUCT>", values,
             f"each model's {what}, keyed by its product name as in gpu.product and "
             "gpu.count.<PRODUCT>: the rule of the node's label, applied to the model's own "
             "GPUs (MIG devices play no part, so under the single MIG strategy it stays the "
             "physical GPU's)",
             "not in GFD: a selector can ask for a model whatever model is the most common "
             "(`gpu.family.NVIDIA-H100-80GB-HBM3`); absent for a model none of whose GPUs "
             "answered (then the pass is incomplete)")
        for name, values, what in (
            ("gpu.memory", "MiB", "memory, as gpu.memory"),
            ("gpu.family", "string", "architecture family, as gpu.family"),
            ("gpu.compute.major", "decimal", "CUDA compute capability major, as gpu.compute.major"),
            ("gpu.compute.minor", "decimal", "CUDA compute capability minor, as gpu.compute.minor"),
        )
    ),
    _row("gpu.whole-count", "decimal",
         "healthy GPUs of every model whose current MIG mode is not enabled (disabled, or "
         "no MIG support); absent while a GPU's MIG mode query fails",
         "not in GFD, whose gpu.count counts MIG-enabled GPUs alike (unchanged here); a "
         "pending MIG mode change counts once the GPU has applied it"),
    _row("gpu.mig-partitioned-count", "decimal",
         "healthy GPUs of every model whose current MIG mode is enabled (nvmlDeviceGetMigMode); "
         "absent while a GPU's MIG mode query fails",
         "not in GFD; with gpu.whole-count it adds up to gpu.healthy"),
    _row("gpu.product", "string",
         "nvmlDeviceGetName of the most common model, each character outside "
         "`[A-Za-z0-9-_. ]` removed and spaces made `-` as GFD does; `-SHARED` when the "
         "GPU is replicated and not renamed; `<product>-MIG-<profile>` or "
         "`<product>-MIG-INVALID` under the single MIG strategy",
         "a name that loses characters is reported in a warning; a value longer than 63 "
         "characters is dropped with a warning, never cut, since a cut value can give the "
         "shared and the unshared product one value; an explicit `rename` of the shared "
         "resource drops `-SHARED` as "
         "renameByDefault does (GFD ignores explicit renames)"),
    _row("gpu.memory", "MiB", "nvmlDeviceGetMemoryInfo total // 1 MiB (v1 struct) of the "
                              "model's last GPU that answered; absent when unknown or 0",
         _PER_GPU_ERRORS.format(call="memory")),
    _row("gpu.family", "string",
         "from the CUDA compute capability of the model's last GPU that answered: tesla, "
         "fermi, kepler, maxwell, pascal, volta, turing, ampere, ada-lovelace, hopper, "
         "blackwell, rubin, undefined",
         _PER_GPU_ERRORS.format(call="compute capability")),
    _row("gpu.compute.major", "decimal", "nvmlDeviceGetCudaComputeCapability of the model's "
                                         "last GPU that answered; absent when 0",
         _PER_GPU_ERRORS.format(call="compute capability")),
    _row("gpu.compute.minor", "decimal", "nvmlDeviceGetCudaComputeCapability of the model's "
                                         "last GPU that answered",
         _PER_GPU_ERRORS.format(call="compute capability")),
    _row("gpu.replicas", "decimal",
         "replicas of nvidia.com/gpu in sources.nvidia.sharing (1 when not shared, 0 when "
         "MIG is enabled on the GPUs)"),
    _row("gpu.sharing-strategy", "none, time-slicing, mps (empty when single MIG is invalid)",
         "sources.nvidia.sharing"),
    _row("gpu.machine", "string",
         "first line of sources.nvidia.machineTypeFile (/sys/class/dmi/id/product_name) in "
         "GFD's name form; `unknown` when unreadable",
         "a name that loses characters (`X9SRA/X9SRA-3`) is reported in a warning"),
    _row("gpu.mode", "graphics, compute, unknown",
         "PCI class of every GPU: all 0x030000 graphics, all 0x030200 compute"),
    _row("gpu.healthy", "decimal",
         "GPUs NVML enumerates that answer normally (on a Tegra node without NVML, the "
         "SoC's one GPU)",
         "not in GFD: GPU health on the node"),
    _row("gpu.unhealthy", "decimal",
         "GPUs NVML enumerates but reports lost or inaccessible (GPU_IS_LOST, "
         "GPU_NOT_FOUND, RESET_REQUIRED, IRQ_ISSUE, NO_PERMISSION, OPERATING_SYSTEM, or no "
         "handle or name); absent when every GPU is healthy",
         "not in GFD, whose pass fails on a lost GPU; cleared by the first pass in which "
         "NVML answers normally again"),
    _row("gpu.clique", "`<cluster uuid>.<clique id>`",
         "nvmlDeviceGetGpuFabricInfo of the GPUs attached to an NVLink fabric (state "
         "completed, status success, non-zero cluster UUID), when they all agree",
         "per-GPU errors (GFD fails the whole pass on any): lost GPUs are not asked; a GPU "
         "whose fabric query fails with anything but NOT_SUPPORTED fails the fabric probe, "
         "so there is no gpu.clique that pass, the pass is incomplete and the last value "
         "stays; GPUs that disagree give no gpu.clique and a warning"),
    _row("mig.capable", "true, false",
         "`true` when nvmlDeviceGetMigMode succeeds on any healthy GPU, `false` when it "
         "answers NOT_SUPPORTED on every one",
         "per-GPU errors (GFD fails the whole pass): lost GPUs do not count; a GPU whose "
         "MIG mode query fails otherwise makes the label absent unless another GPU gives "
         "`true`, since `false` is then unknown, and the pass incomplete"),
    _row("mps.capable", "true, false",
         "sharing.mps replicates a resource and no GPU has MIG enabled",
         "MPS with MIG enabled gives `false` and a warning (GFD fails the pass)"),
    _row("mig.strategy", "single, mixed", "sources.nvidia.migStrategy (or --mig-strategy); "
                                          "absent for none",
         "when MIG devices cannot be read, the MIG labels are left out (under single also "
         "gpu.count, product, memory, replicas and sharing-strategy, which would describe "
         "them) and the pass is incomplete, so the last good values stay; GFD fails the "
         "pass"),
    *(
        _row(f"{resource}.{suffix}", values, origin)
        for resource, scope in (("gpu", "single MIG strategy"),
                                ("mig-<PROFILE>", "mixed MIG strategy, per MIG profile"))
        for suffix, values, origin in (
            ("multiprocessors", "decimal", f"{scope}: nvmlDeviceGetAttributes "
                                           "multiprocessorCount of the first MIG device"),
            ("slices.gi", "decimal", f"{scope}: gpuInstanceSliceCount"),
            ("slices.ci", "decimal", f"{scope}: computeInstanceSliceCount"),
            ("engines.copy", "decimal", f"{scope}: sharedCopyEngineCount"),
            ("engines.decoder", "decimal", f"{scope}: sharedDecoderCount"),
            ("engines.encoder", "decimal", f"{scope}: sharedEncoderCount"),
            ("engines.jpeg", "decimal", f"{scope}: sharedJpegCount"),
            ("engines.ofa", "decimal", f"{scope}: sharedOfaCount"),
        )
    ),
    _row("mig-<PROFILE>.count", "decimal",
         "mixed MIG strategy: MIG devices of the profile (e.g. `1g.5gb`, `1c.7g.40gb`, "
         "`1g.10gb.me`), named from the GPU/compute instance profile indices and the "
         "memory in eighths of the GPU rounded half away from zero",
         "GPU instance profile 17 (3 slices, graphics) is named `3g.<N>gb.gfx` (GFD fails "
         "the pass)"),
    _row("mig-<PROFILE>.product", "string", "`<product>-MIG-<profile>[-SHARED]`"),
    _row("mig-<PROFILE>.memory", "MiB", "nvmlDeviceGetAttributes memorySizeMB"),
    _row("mig-<PROFILE>.replicas", "decimal",
         "replicas of nvidia.com/mig-<profile> in sources.nvidia.sharing"),
    _row("mig-<PROFILE>.sharing-strategy", "none, time-slicing, mps", "sources.nvidia.sharing"),
    _row("gpu.platform", "tegra, wsl2",
         "host files, on a node whose GPU is no NVIDIA PCI function: `tegra` for "
         "/etc/nv_tegra_release, a /sys/devices/soc0/family starting with Tegra, or "
         "`nvidia,tegra<N>` in the device tree's compatible; `wsl2` for a kernel release "
         "with `microsoft-standard-WSL2`, /dev/dxg or /usr/lib/wsl/lib/libdxcore.so; "
         "absent on PCI GPU nodes",
         "not in GFD. On Tegra the GFD labels follow GFD's CUDA manager: gpu.product is "
         "CUDA's name (NVML's `Orin (nvgpu)` is `Orin`), cuda.driver-version.* is "
         "`unknown`, mig.capable `false`, gpu.mode `unknown`, vgpu.present `false`. "
         "Without NVML (most Jetson releases) the SoC's one GPU gives gpu.count, product "
         "and, where the chip fixes it, compute capability and family (Orin 8.7; Thor's "
         "depends on the CUDA version, so only NVML gives it); gpu.memory and "
         "cuda.runtime-version.* need NVML (GFD reads them from CUDA). An NVML that "
         "fails costs only its labels (the pass is incomplete)"),
    _row("tegra.chip", "`tegra<N>`",
         "`nvidia,tegra<N>` in the device tree root's compatible "
         "(/sys/firmware/devicetree/base or /proc/device-tree), else the chip id in "
         "/sys/devices/soc0/soc_id (0x23 tegra234 Orin, 0x26 tegra264 Thor)",
         "not in GFD"),
    _row("tegra.release", "`<major>.<revision>`",
         "the Jetson Linux (L4T) release in /etc/nv_tegra_release: `# R36 (release), "
         "REVISION: 4.3` gives `36.4.3`",
         "not in GFD; the deployed pod reads it through its mount of the host root "
         "(docs/install.md, Jetson and WSL2 nodes)"),
    _row("tegra.machine", "string",
         "the device tree's model (else /sys/devices/soc0/machine) in GFD's name form",
         "not in GFD, whose gpu.machine reads DMI, which Jetson boards often lack"),
    _row("vgpu.present", "true, false",
         "the vendor-specific capability of a GPU's PCI config space carries the vGPU "
         "signature `VF`",
         "where config space is unreadable (unprivileged), NVML's virtualization mode "
         "(vGPU guest) decides instead of dropping every vGPU label; only GPU functions "
         "are read"),
    _row("vgpu.host-driver-version", "string", "vGPU capability record 0, bytes 2-11"),
    _row("vgpu.host-driver-branch", "string", "vGPU capability record 0, bytes 12-21"),
)


class NvidiaSource(Source):
    name = "nvidia"
    description = "NVIDIA GPUs through NVML, labelled as GPU Feature Discovery labels them"
    defaults: Mapping[str, Any] = {
        # none, single or mixed, as GFD's --mig-strategy (the CLI's --mig-strategy wins)
        "migStrategy": "none",
        # true publishes nvidia.com/gfd.timestamp as GFD does
        "timestampLabel": False,
        # where gpu.machine comes from (a host path)
        "machineTypeFile": "/sys/class/dmi/id/product_name",
        # seconds one pass may wait for NVML before leaving it alone
        "nvmlTimeout": 30.0,
        # GFD's sharing config: replicas of nvidia.com/gpu or nvidia.com/mig-<profile>
        "sharing": {
            "timeSlicing": {"renameByDefault": False, "failRequestsGreaterThanOne": False,
                            "resources": []},
            "mps": {"renameByDefault": False, "failRequestsGreaterThanOne": False,
                    "resources": []},
        },
    }
    catalogue = CATALOGUE

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pci = PciScanner()
        self._session: Session | None = None
        self._started = int(time.time())
        self._last_note = ""
        self._profiles: dict[tuple, dict[int, int]] = {}  # MIG profile tables, see Probe

    @property
    def session(self) -> Session:
        """NVML state kept across passes; made on the first pass that needs NVML."""
        if self._session is None:
            from .nvml import Session

            self._session = Session(self.clock)
        return self._session

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        problems = []
        if options.get("migStrategy") not in STRATEGIES:
            problems.append(f"migStrategy: must be one of {', '.join(STRATEGIES)}")
        timeout = options.get("nvmlTimeout", 0)
        # Bounded above too: a deadline far enough away overflows the clock arithmetic.
        if not 0 < timeout <= NVML_TIMEOUT_MAX:
            problems.append(f"nvmlTimeout: must be a positive number of seconds, at most "
                            f"{NVML_TIMEOUT_MAX}, got {timeout}")
        sharing = options.get("sharing") or {}
        if any((sharing.get(k) or {}).get("resources") for k in ("timeSlicing", "mps")):
            from .sharing import validate

            problems += validate(options)
        return problems

    # -- discovery ---------------------------------------------------------------------

    def discover(self, ctx: Context) -> Features:
        features = Features()
        scan = self.pci.scan(ctx.root)
        for gpu in scan.gpus:
            features.instance("pci", {"address": gpu.address, "class": f"0x{gpu.class_code:06x}",
                                      "device": gpu.device},
                              f"/sys/bus/pci/devices/{gpu.address}")
        # a GPU that is no PCI function of this node (Tegra, WSL2) shows in host files
        platform = None if scan.gpus else detect(ctx.root)
        if scan.listed and not scan.gpus and platform is None:
            self._note(f"no NVIDIA GPU on the PCI bus ({scan.listed} devices under "
                       "/sys/bus/pci/devices, none NVIDIA display class): no nvidia.com labels")
            features.attribute(_NVML, "status", "skipped", "no NVIDIA GPU on the PCI bus")
            return features
        if platform is not None:
            self._add_platform(features, platform)
        session = self.session
        session.recorder = None
        try:
            outcome = session.open(ctx.host, float(ctx.options["nvmlTimeout"]))
            features.attribute(_NVML, "status", outcome.status, outcome.message or "nvmlInit")
            if outcome.status != "ok":
                self._unavailable(ctx, scan, outcome, features, platform)
                return features
            self._note("")
            try:
                snapshot = self._query(ctx, scan, platform)
            finally:
                session.close()
            if snapshot is not None:
                self._facts(ctx, scan, snapshot, features, platform)
            elif scan.gpus:
                self._present_on_bus(ctx, scan, features)
            elif platform is not None and platform.kind == TEGRA:
                self._soc_facts(ctx, scan, features, platform)
        finally:
            self._write_capture(ctx)
        return features

    def _add_platform(self, features: Features, platform: Platform) -> None:
        features.attribute(_NODE, "platform", platform.kind, platform.evidence)
        if platform.kind != TEGRA:
            return
        for name, value, origin in (
                ("chip", platform.chip, "nvidia,tegra<N> in the device tree's compatible, or "
                                        "/sys/devices/soc0/soc_id"),
                ("release", platform.release, TEGRA_RELEASE),
                ("machine", platform.machine, "the device tree's model")):
            if value:
                features.attribute("tegra", name, value, origin)

    def _soc_facts(self, ctx: Context, scan: PciScan, features: Features,
                   platform: Platform) -> None:
        """A Tegra node without a usable NVML: the SoC's one GPU, as CUDA describes it."""
        from .discover import Gpu, Snapshot

        snapshot = Snapshot()
        snapshot.driver = TEGRA_DRIVER
        soc = platform.soc_gpu
        if soc is None:
            ctx.warn(f"Tegra SoC {platform.chip or platform.soc_id or '(unknown)'} is not one "
                     "this agent knows: only gpu.present and the tegra labels")
            features.attribute(_NODE, "gpu.present", "true", platform.evidence)
            return
        snapshot.gpus.append(Gpu(0, soc.name, compute=soc.compute, mig="unsupported"))
        self._facts(ctx, scan, snapshot, features, platform,
                    origin=f"Tegra SoC {platform.chip} ({platform.evidence})")

    def _unavailable(self, ctx: Context, scan: PciScan, outcome: Outcome,
                     features: Features, platform: Platform | None = None) -> None:
        if platform is not None and platform.kind == TEGRA:
            # NVML is optional on Tegra (most Jetson releases have none): the SoC speaks
            self._soc_facts(ctx, scan, features, platform)
            if not (self.session.last_failure.status == "absent"
                    and outcome.status in ("absent", "waiting")):
                ctx.warn(f"Tegra GPU: NVML cannot be used: {outcome.message}; only the "
                         "labels the SoC gives")
                ctx.complete = False
            return
        if scan.gpus:
            self._present_on_bus(ctx, scan, features)
            ctx.warn(f"NVIDIA GPU on the PCI bus ({scan.addresses}) but NVML cannot be used: "
                     f"{outcome.message}; only gpu.present until it can")
            ctx.complete = False
            return
        last = self.session.last_failure
        if last.status == "absent" and outcome.status in ("absent", "waiting"):
            # nothing NVIDIA on the bus (or no bus to see) and no driver: no GPU
            self._note(f"no NVIDIA GPU: none on the PCI bus and {last.message}: "
                       "no nvidia.com labels")
            return
        ctx.warn(f"NVML cannot be used: {outcome.message}")
        ctx.complete = False

    def _present_on_bus(self, ctx: Context, scan: PciScan, features: Features) -> None:
        """What can be said without NVML: there is a GPU, and perhaps whether it is a vGPU."""
        features.attribute(_NODE, "gpu.present", "true",
                           f"NVIDIA GPU on the PCI bus: {scan.addresses}")
        self._add_vgpu(ctx, features, [])
        self._add_timestamp(ctx, features)

    def _query(self, ctx: Context, scan: PciScan,
               platform: Platform | None = None) -> Snapshot | None:
        """Run the NVML probes of one pass; None when not even the GPUs could be listed."""
        from .discover import Probe, ProbeFailed
        from .nvml import Unresponsive, describe

        session, options = self.session, ctx.options
        probe = Probe(session.nv, None if ctx.host.capture_dir else self._profiles)
        probe.partial = platform is not None and platform.kind == TEGRA
        try:
            count = session.call(probe.devices)
        except Unresponsive as exc:
            ctx.warn(f"NVML stopped answering while listing GPUs ({exc}); no GPU labels")
            ctx.complete = False
            return None
        except ProbeFailed as exc:
            ctx.warn(f"NVML failed while listing GPUs: {exc}; no GPU labels")
            ctx.complete = False
            return None
        except Exception as exc:
            ctx.warn(f"NVML failed while listing GPUs: {describe(exc)}; no GPU labels")
            ctx.complete = False
            return None
        snapshot = probe.snapshot
        if (platform is not None and platform.kind == TEGRA) or any(
                is_integrated_name(g.name) for g in snapshot.gpus):
            # before the MIG probe: GFD sees no MIG on an integrated GPU
            self._as_gfd_on_tegra(snapshot, platform)
        _, unreadable = self.pci.vgpu(ctx.root)
        wanted = {"mig": options["migStrategy"] != "none" or ctx.host.capture_dir is not None,
                  "fabric": True,
                  "virtualization": bool(unreadable)}
        jobs = {"mig": probe.mig, "fabric": probe.fabric, "virtualization": probe.virtualization}
        hung = False
        for name, job in jobs.items():
            if not wanted[name]:
                snapshot.probes[name] = "skipped"
            elif hung:
                snapshot.probes[name] = "not run: NVML stopped answering"
            else:
                try:
                    session.call(job)
                    snapshot.probes[name] = "ok"
                except Unresponsive:
                    hung = True
                    snapshot.probes[name] = "NVML did not answer in time"
                except ProbeFailed as exc:
                    snapshot.probes[name] = str(exc)
                except Exception as exc:
                    snapshot.probes[name] = describe(exc)
        if count == 0 and not scan.gpus:
            return None  # NVML works and there is no GPU: nothing to say
        return snapshot

    @staticmethod
    def _as_gfd_on_tegra(snapshot: Snapshot, platform: Platform | None) -> None:
        """GFD labels an integrated GPU from CUDA, not NVML: CUDA's name, no MIG, no
        driver version; what NVML does not answer the SoC may."""
        snapshot.driver = TEGRA_DRIVER
        soc = platform.soc_gpu if platform is not None else None
        for gpu in snapshot.gpus:
            if not gpu.healthy:
                continue
            gpu.name = cuda_name(gpu.name)
            gpu.mig = "unsupported"
            gpu.failed -= {"MIG mode"}
            if gpu.compute is None and soc is not None and soc.compute is not None \
                    and "compute capability" not in gpu.failed:
                gpu.compute = soc.compute

    def _facts(self, ctx: Context, scan: PciScan, snapshot: Snapshot,
               features: Features, platform: Platform | None = None, origin: str = "") -> None:
        from .discover import add_gpus, add_mig_devices

        options = ctx.options
        origin = origin or (f"NVML lists {len(snapshot.gpus)} GPU(s)" if snapshot.gpus
                            else f"NVIDIA GPU on the PCI bus: {scan.addresses}")
        features.attribute(_NODE, "gpu.present", "true", origin)
        self._add_timestamp(ctx, features)
        if snapshot.driver is not None:
            features.attribute(_NVML, "driver", snapshot.driver,
                               f"nvmlSystemGetDriverVersion={snapshot.driver!r}")
        if snapshot.cuda is not None:
            features.attribute(_NVML, "cuda", str(snapshot.cuda),
                               f"nvmlSystemGetCudaDriverVersion={snapshot.cuda}")
        for name, status in snapshot.probes.items():
            features.attribute(_NVML, f"probe.{name}", status, f"{name} probe")
        add_gpus(features, snapshot.gpus)
        add_mig_devices(features, snapshot.mig_devices)
        machine_file = str(options["machineTypeFile"])
        machine = ctx.root.read_line(machine_file, limit=4096)
        features.attribute(_NODE, "machine", machine if machine else "unknown",
                           f"{ctx.root.display(machine_file)}={machine!r}")
        self._add_vgpu(ctx, features, snapshot.gpus, platform)
        for warning in snapshot.warnings:
            ctx.warn(warning)
        self._check(ctx, features, snapshot)

    def _check(self, ctx: Context, features: Features, snapshot: Snapshot) -> None:
        """Warnings about what the labels will have to leave out or change."""
        from . import labels as gfd
        from .sharing import strategy

        options = ctx.options
        for name, status in snapshot.probes.items():
            if status not in ("ok", "skipped"):
                ctx.warn(f"{name} probe failed: {status}; its labels are left out")
                ctx.complete = False
        gpus = snapshot.gpus
        for gpu in gpus:
            if not gpu.healthy:
                ctx.warn(f"GPU {gpu.index} ({gpu.bus_id or 'no PCI address'}) is unhealthy: "
                         f"{gpu.problem}")
        healthy = [g for g in gpus if g.healthy]
        if snapshot.driver is not None and gfd.driver_parts(snapshot.driver) is None:
            ctx.warn(f"driver version {snapshot.driver!r} does not have two or three parts: "
                     "no driver version labels")
        for model in gfd.models(healthy):
            for what, labels in (("memory", "memory"),
                                 ("compute capability", "family and compute capability")):
                if all(what in g.failed for g in model.gpus):
                    # unknown is not absent: the agent keeps the last labels
                    ctx.warn(f"{model.name!r}: no GPU of the model answered its {what} query; "
                             f"its {labels} labels are left out and the pass is incomplete")
                    ctx.complete = False
        unknown = [g.index for g in healthy if "MIG mode" in g.failed]
        if unknown:
            ctx.warn(f"MIG mode of GPU {', '.join(map(str, unknown))} unknown: mig.capable, "
                     "gpu.whole-count and gpu.mig-partitioned-count are left out and the pass "
                     "is incomplete")
            ctx.complete = False
        for model in sorted({g.name for g in healthy}):
            lost = gfd.dropped_characters(model)
            if lost:
                ctx.warn(f"GPU name {model!r}: {lost!r} removed for label values "
                         f"({gfd.gfd_name(model)!r})")
        machine = features.attributes.get(_NODE, {}).get("machine")
        if machine is not None and healthy and gfd.dropped_characters(machine.value):
            ctx.warn(f"machine type {machine.value!r}: {gfd.dropped_characters(machine.value)!r}"
                     f" removed for gpu.machine ({gfd.gfd_name(machine.value)!r})")
        enabled = [g.index for g in healthy if g.mig == "enabled"]
        if strategy(options) == "mps" and enabled:
            ctx.warn(f"MPS sharing does not work with MIG (enabled on GPU "
                     f"{', '.join(map(str, enabled))}): mps.capable=false")
        if options["migStrategy"] == "single" and snapshot.probes.get("mig") == "ok":
            problem = gfd.single_problem(healthy, snapshot.mig_devices)
            if problem:
                ctx.warn(f"single MIG strategy: {problem}; publishing -MIG-INVALID")
        if snapshot.probes.get("fabric") == "ok":
            _, cliques = gfd.clique_of(healthy)
            if len(cliques) > 1:
                ctx.warn(f"GPUs disagree on their NVLink clique ({', '.join(cliques)}): "
                         "no gpu.clique")

    # -- pieces -----------------------------------------------------------------------

    def _add_vgpu(self, ctx: Context, features: Features, gpus: list,
                  platform: Platform | None = None) -> None:
        """GFD reads vGPU from PCI config space; where that needs privileges this agent
        lacks, NVML's virtualization mode answers whether this is a vGPU guest."""
        records, unreadable = self.pci.vgpu(ctx.root)
        if platform is not None and not records:
            # GFD finds no NVIDIA GPU function to carry a vGPU record
            features.attribute("vgpu", "present", "false",
                               f"no NVIDIA GPU on the PCI bus ({platform.kind})")
            return
        if records and not unreadable:
            features.attribute("vgpu", "present",
                               str(any(r.vgpu for r in records.values())).lower(),
                               "vendor capability in /sys/bus/pci/devices/<gpu>/config")
            found = [(a, r) for a, r in sorted(records.items()) if r.vgpu and r.version]
            if found:
                address, record = found[-1]  # GFD: the last device wins
                where = f"vGPU capability in /sys/bus/pci/devices/{address}/config"
                features.attribute("vgpu", "host-driver-version", record.version, where)
                features.attribute("vgpu", "host-driver-branch", record.branch, where)
            return
        healthy = [g for g in gpus if g.healthy]
        modes = [g.virtualization for g in healthy if g.virtualization is not None]
        if healthy and len(modes) == len(healthy):
            present = any(mode == VIRTUALIZATION_VGPU for mode in modes)
            features.attribute("vgpu", "present", str(present).lower(),
                               "nvmlDeviceGetVirtualizationMode, as PCI config space is "
                               f"unreadable ({', '.join(unreadable)})")

    def _add_timestamp(self, ctx: Context, features: Features) -> None:
        if ctx.options.get("timestampLabel"):
            features.attribute(_NODE, "timestamp", str(self._started),
                               "time of the first pass of this agent")

    def _write_capture(self, ctx: Context) -> None:
        capture = ctx.host.capture_dir
        recorder = self._session.recorder if self._session is not None else None
        if capture is None or recorder is None:
            return
        from .replay import FILENAME, dumps

        self.session.recorder = None
        try:
            (capture / FILENAME).write_text(dumps(recorder.snapshot()), encoding="utf-8")
        except OSError as exc:
            ctx.warn(f"cannot write {capture / FILENAME}: {exc}")

    def _note(self, message: str) -> None:
        """Log a state that needs no action at info level, once per change."""
        if message and message != self._last_note:
            log.info("nvidia: %s", message)
        self._last_note = message

    # -- labels ------------------------------------------------------------------------

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        if "gpu.present" not in features.attributes.get(_NODE, {}):
            return []  # no NVIDIA GPU: not even the label module is needed
        from .labels import build

        return build(features, options)

