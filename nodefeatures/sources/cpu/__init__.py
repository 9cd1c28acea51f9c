"""cpu: CPUID flags, CPU model, SMT, power management and confidential computing.

On x86-64 the flags come from raw CPUID and XCR0, executed in this process once and kept
for its lifetime (CPUID does not change while a process runs). Without raw CPUID
(another architecture, a locked-down process, a fixture without `cpuid.txt`) the source
reads /proc/cpuinfo instead. Fixtures replay `cpuid.txt`; capture records it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import (
    NEVER,
    Context,
    Fact,
    Features,
    LabelDoc,
    Source,
    flag_labels,
)
from nodefeatures.sources.cpu import cpuid
from nodefeatures.sources.cpu.facts import CpuFacts

log = logging.getLogger(__name__)

CPUID_FILE = "cpuid.txt"
# NFD's default: flags every x86-64 CPU has, or that say little on their own.
DEFAULT_BLACKLIST = [
    "AVX10", "BMI1", "BMI2", "CLMUL", "CMOV", "CX16", "ERMS", "F16C", "HTT", "LZCNT", "MMX",
    "MMXEXT", "NX", "POPCNT", "RDRAND", "RDSEED", "RDTSCP", "SGX", "SGXLC", "SSE", "SSE2",
    "SSE3", "SSE4", "SSE42", "SSSE3", "TDX_GUEST",
]

# Attribute features NFD's cpu source always has, even empty.
ATTRIBUTE_FEATURES = ("model", "pstate", "rdt", "security", "sst", "topology", "coprocessor")
# Security elements that are features only, never labels (as NFD: sizes and counts).
UNLABELLED_SECURITY = frozenset(
    {"sgx.epc", "tdx.total_keys", "sev.asids", "sev.encrypted_state_ids"})
RESCTRL_L3_CLOSIDS = "sys/fs/resctrl/info/L3/num_closids"

_live_facts: CpuFacts | None = None
_live_flags: dict[str, Fact] | None = None
_fallback_logged = False


def live_facts() -> CpuFacts:
    """This CPU's decoded CPUID, once per process; raises CpuidUnavailable."""
    global _live_facts
    if _live_facts is None:
        from nodefeatures.sources.cpu.x86 import decode

        _live_facts = decode(cpuid.live())
    return _live_facts


class CpuSource(Source):
    name = "cpu"
    description = "CPUID flags, CPU model, SMT, C/P-states, SST-BF, SGX/TDX/SEV"
    defaults: ClassVar[Mapping[str, Any]] = {
        "cpuid": {"attributeBlacklist": DEFAULT_BLACKLIST, "attributeWhitelist": []},
    }
    catalogue = (
        LabelDoc(
            "cpuid.<FLAG>", "true",
            "x86-64: raw CPUID leaves and XCR0, decoded into NFD's (klauspost/cpuid) names "
            "with the same OS-support gating (AVX needs XCR0[2:1]=11; AVX-512, AMX, "
            "AVX512BF16, WRMSRNS and MSRLIST need XCR0[7:5]=111 too); /proc/cpuinfo flags "
            "when raw CPUID cannot run. arm64: /proc/cpuinfo `Features` words in NFD's "
            "hwcap table, upper-cased. Flags are filtered by "
            "`sources.cpu.cpuid.attributeBlacklist` (NFD's default list) or, when non-empty, "
            "`attributeWhitelist`",
            "only without raw CPUID (the /proc/cpuinfo fallback): flags the kernel hides "
            "(CMPCCXADD, AVXIFMA, PSFD, ...) are missing and AVX10_VERSION is unknown; NFD "
            "always executes CPUID"),
        LabelDoc(
            "cpuid.FXSROPT", "true", "CPUID 0x80000001:EDX[25] (AMD FFXSR)",
            "NFD also sets it from CPUID 1:EDX[25], which is the SSE bit, so every x86 node "
            "gets it; we read only the AMD bit it stands for"),
        LabelDoc(
            "cpuid.AMXFP8", "true", "CPUID 0x1E.1:EAX[4] with AMXTILE",
            "NFD reads CPUID 7.0:ECX[3], the PKU bit, so every PKU CPU with AVX-512 state "
            "(Skylake-SP and later, Zen 4 and later) gets it; we read the AMX-FP8 bit"),
        LabelDoc(
            "cpuid.AMXTRANSPOSE", "true", "CPUID 0x1E.1:EAX[5] with AMXTILE",
            "NFD reads CPUID 7.1:EDX[6], which Intel does not define for AMX-TRANSPOSE; we "
            "read the documented bit"),
        LabelDoc(
            "cpuid.AMXTF32", "true", "CPUID 0x1E.1:EAX[6] with AMXTILE",
            "NFD reads CPUID 7.1:EDX[7], which Intel does not define for AMX-TF32; we read "
            "the documented bit"),
        LabelDoc(
            "cpuid.XSAVE", "true", "CPUID 1:ECX[26]",
            "NFD's cpuid library tests `c&1<<26`, which Go evaluates as `(c&1)<<26`, so NFD "
            "reports XSAVE whenever SSE3 (bit 0) is set; we read bit 26. The same on every "
            "CPU from 2011 on; older SSE3 CPUs without XSAVE (Core 2, Nehalem, K8, K10) "
            "lose a label they never deserved"),
        LabelDoc(
            "cpuid.OSXSAVE", "true", "CPUID 1:ECX[27] (the OS enabled XSAVE)",
            "NFD reports it whenever SSE3 is set (the same `(c&1)<<27` slip as XSAVE); we "
            "read bit 27, so a kernel booted with `noxsave` also shows no OSXSAVE"),
        LabelDoc(
            "cpuid.TDX_GUEST", "true",
            "CPUID 0x21 signature `IntelTDX    `, or Hyper-V isolation leaf 0x4000000C "
            "EBX=0xBE3; default-blacklisted (it drives `security.tdx.protected`)",
            "the Hyper-V leaf is consulted only when CPUID 1:ECX[31] says a hypervisor is "
            "present; on bare metal that leaf repeats the highest basic leaf and means "
            "nothing"),
        LabelDoc("cpuid.X86_64_V<N>", "true",
                 "x86-64 psABI levels 1..4: every level whose features are all present "
                 "(blacklisted flags count), given SYSENTER or SYSCALL"),
        LabelDoc("cpuid.AVX10_VERSION", "decimal",
                 "CPUID 0x24.0:EBX[7:0] when AVX10 is present; never filtered"),
        LabelDoc("model.vendor_id", "string",
                 "x86: CPUID leaf 0 signature as NFD names vendors (`Intel`, `AMD`, `Hygon`, "
                 "`VIA`, ..., `VendorUnknown`); arm64: MIDR_EL1 implementer"),
        LabelDoc("model.family", "decimal",
                 "x86: CPUID 1 family (+ extended family when 0xF); arm64: MIDR_EL1[23:16]"),
        LabelDoc("model.id", "decimal",
                 "x86: CPUID 1 model (+ extended model for families 6 and 0xF only, so a "
                 "Zhaoxin family 7 model 59 is 11, as in NFD, unlike /proc/cpuinfo); arm64: "
                 "MIDR_EL1[15:0]"),
        LabelDoc("model.hypervisor", "string",
                 "`none` without CPUID 1:ECX[31]; else the CPUID 0x40000000 signature as a "
                 "lower-case vendor (`kvm`, `msvm`, `vmware`, `xenhvm`, `qemu`, ...), an "
                 "unknown signature made label-safe, or `unknown` when empty; arm64: `none`",
                 "an unknown signature also loses non-alphanumeric edges so it stays a valid "
                 "value (NFD would publish nothing); without raw CPUID a present hypervisor "
                 "cannot be named, so no label then"),
        LabelDoc("hardware_multithreading", "true/false",
                 "/sys/bus/cpu/devices/*/topology/thread_siblings_list: true when one lists "
                 "more than one CPU",
                 "offline CPUs (no topology directory) are skipped where NFD drops the label "
                 "(so `nosmt` hosts get false), and the first SMT CPU settles true"),
        LabelDoc("cstate.enabled", "true/false",
                 "x86 with the intel_idle driver: "
                 "/sys/module/intel_idle/parameters/max_cstate > 0"),
        LabelDoc("pstate.status", "string",
                 "x86: /sys/devices/system/cpu/intel_pstate/status unless `off`",
                 "an empty status file gives no pstate labels (NFD would publish an empty "
                 "value)"),
        LabelDoc("pstate.turbo", "true/false",
                 "x86: intel_pstate/no_turbo starts with 0"),
        LabelDoc("pstate.scaling_governor", "string",
                 "x86, intel_pstate `active`: the scaling_governor every cpufreq policy with "
                 "CPUs shares"),
        LabelDoc("security.sgx.enabled", "true",
                 "x86: CPUID SGX and EPC sections (CPUID 0x12 subleaves 2-9) totalling > 0",
                 "not emitted without raw CPUID, since the EPC size is CPUID-only"),
        LabelDoc("security.tdx.enabled", "true",
                 "x86: /sys/module/kvm_intel/parameters/tdx is `Y`"),
        LabelDoc("security.tdx.protected", "true", "x86: TDX_GUEST (this node is a TDX guest)"),
        LabelDoc("security.sev.enabled", "true",
                 "x86: /sys/module/kvm_amd/parameters/sev starts with 1 or Y"),
        LabelDoc("security.sev.es.enabled", "true",
                 "x86: /sys/module/kvm_amd/parameters/sev_es starts with 1 or Y"),
        LabelDoc("security.sev.snp.enabled", "true",
                 "x86: /sys/module/kvm_amd/parameters/sev_snp starts with 1 or Y"),
        LabelDoc("power.sst_bf.enabled", "true",
                 "x86: some /sys/bus/cpu/devices/cpuN/cpufreq/base_frequency above the "
                 "CPUID 0x16 base frequency"),
        LabelDoc("cpu_atom", NEVER, "-",
                 "not emitted: NFD's code reads a path that never exists, so NFD never "
                 "emits it either; hybrid CPUs show as cpuid.HYBRID_CPU"),
        LabelDoc("cpu_core", NEVER, "-", "not emitted, as cpu_atom"),
        LabelDoc("rdt.<FEATURE>", NEVER, "-",
                 "not emitted: RDT is feature-only since NFD v0.16"),
    )

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        from nodefeatures.discovery.config import describe

        lists = options.get("cpuid", {})
        # Each list names its wrong entries itself; the blacklist's are already named by
        # the type check against its default, so this speaks only for the whitelist.
        return [f"cpuid.attributeWhitelist[{i}]: expected a string, got {describe(item)}"
                for i, item in enumerate(lists.get("attributeWhitelist") or [])
                if not isinstance(item, str)][:3]

    # -- discovery --------------------------------------------------------------------

    def discover(self, ctx: Context) -> Features:
        recorder: cpuid.RecordingCpuid | None = None
        if ctx.host.fixture_dir is not None:
            facts = _replayed(Path(ctx.host.fixture_dir) / CPUID_FILE, ctx) or _fallback(ctx)
        else:
            try:
                if ctx.host.capture_dir is not None:
                    from nodefeatures.sources.cpu.x86 import decode

                    recorder = cpuid.RecordingCpuid(cpuid.live())
                    facts = decode(recorder)
                else:
                    facts = live_facts()
            except cpuid.CpuidUnavailable as exc:
                _note_fallback(str(exc))
                facts = _fallback(ctx)

        features = Features()
        # As NFD: these features exist on every node, with no element when none applies.
        for feature in ATTRIBUTE_FEATURES:
            features.has_attributes(feature)
        features.has_flags("cpuid")
        if facts is not None:
            _add_cpu_facts(features, facts, live=facts is _live_facts)
        cpus = ctx.root.listdir("sys/bus/cpu/devices")
        from nodefeatures.sources.cpu.topology import hardware_multithreading, socket_count

        smt = hardware_multithreading(ctx.root, cpus)
        if smt is not None:
            features.attribute("topology", "hardware_multithreading", *smt)
        sockets = socket_count(ctx.root, cpus)
        if sockets is not None:
            features.attribute("topology", "socket_count", *sockets)
        if facts is not None and facts.arch == "x86_64":
            _add_x86_host_features(features, facts, cpus, ctx)
        if recorder is not None and ctx.host.capture_dir is not None:
            target = Path(ctx.host.capture_dir) / CPUID_FILE
            try:
                target.write_text(recorder.text())
            except OSError as exc:
                ctx.warn(f"{target}: cannot write: {exc.strerror or exc}")
        return features

    # -- labels -----------------------------------------------------------------------

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        labels = _flag_labels(features.flags.get("cpuid", {}),
                              options.get("cpuid") or self.defaults["cpuid"])
        for feature, prefix in (("cpuid", "cpuid."), ("model", "model."),
                                ("cstate", "cstate."), ("pstate", "pstate."),
                                ("security", "security."), ("sst", "power.sst_")):
            for name, fact in sorted(features.attributes.get(feature, {}).items()):
                if feature == "security" and name in UNLABELLED_SECURITY:
                    continue
                labels.append(Label(f"{prefix}{name}", fact.value, fact.origin))
        smt = features.attributes.get("topology", {}).get("hardware_multithreading")
        if smt is not None:
            labels.append(Label("hardware_multithreading", smt.value, smt.origin))
        coprocessor = features.attributes.get("coprocessor", {}).get("nx_gzip")
        if coprocessor is not None:
            labels.append(Label("coprocessor.nx_gzip", coprocessor.value, coprocessor.origin))
        return labels


_flag_label_cache: tuple[tuple[frozenset[str], frozenset[str]], dict[str, Fact],
                        list[Label]] | None = None


def _flag_labels(flags: dict[str, Fact], lists: Mapping[str, Any]) -> list[Label]:
    """`cpuid.<FLAG>` labels after the black/whitelist; the last answer is reused."""
    global _flag_label_cache
    whitelist = frozenset(lists.get("attributeWhitelist") or ())
    blacklist = frozenset(lists.get("attributeBlacklist") or ())
    cached = _flag_label_cache
    # Equal flags (the same Fact objects on a live host) and lists give equal labels.
    if cached is not None and cached[0] == (whitelist, blacklist) and cached[1] == flags:
        return list(cached[2])
    kept = {name: fact for name, fact in flags.items()
            if (name in whitelist if whitelist else name not in blacklist)}
    labels = flag_labels(Features(flags={"cpuid": kept}), "cpuid", "cpuid")
    _flag_label_cache = ((whitelist, blacklist), dict(flags), labels)
    return list(labels)


def _replayed(path: Path, ctx: Context) -> CpuFacts | None:
    """Facts from a fixture's cpuid.txt, or None (with a warning) when it is unusable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(cpuid.MAX_DUMP_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        ctx.warn(f"{path}: {exc.strerror or exc}; using /proc/cpuinfo")
        return None
    if len(data) > cpuid.MAX_DUMP_BYTES:
        ctx.warn(f"{path}: larger than {cpuid.MAX_DUMP_BYTES} bytes; using /proc/cpuinfo")
        return None
    dump = cpuid.DumpCpuid.parse(data.decode("utf-8", errors="replace"))
    for number, problem in dump.problems[: cpuid.MAX_REPORTED_PROBLEMS]:
        ctx.warn(f"{path}: line {number}: {problem}; line ignored")
    hidden = len(dump.problems) - cpuid.MAX_REPORTED_PROBLEMS
    if hidden > 0:
        ctx.warn(f"{path}: {hidden} more unusable lines ignored")
    if (0, 0) not in dump.leaves:
        ctx.warn(f"{path}: no record of CPUID leaf 0; using /proc/cpuinfo")
        return None
    from nodefeatures.sources.cpu.x86 import decode

    return decode(dump)


def _fallback(ctx: Context) -> CpuFacts | None:
    """Facts from /proc/cpuinfo (and MIDR_EL1 on arm64), or None."""
    from nodefeatures.sources.cpu import cpuinfo

    text = ctx.root.read_text(cpuinfo.CPUINFO, limit=cpuinfo.MAX_CPUINFO)
    origin = ctx.root.display(cpuinfo.CPUINFO)
    if text is None:
        if not ctx.root.exists(cpuinfo.CPUINFO):
            ctx.warn(f"{origin}: absent and no raw CPUID; no CPU flag or model labels")
        return None
    block = cpuinfo.first_block(text)
    from nodefeatures.sources.cpu import arm64

    if arm64.is_arm64(block):
        midr = ctx.root.read_text(arm64.MIDR, limit=4096)
        return arm64.arm64_facts(block, origin, midr, ctx.root.display(arm64.MIDR), ctx.warn)
    if "flags" in block or "vendor_id" in block:
        return cpuinfo.x86_facts(block, origin, ctx.warn)
    ctx.warn(f"{origin}: neither x86 `flags` nor arm64 `Features`; no CPU flag or model labels")
    return None


def _note_fallback(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged and not reason.startswith("not x86-64"):
        log.warning("raw CPUID unavailable (%s); reading /proc/cpuinfo instead", reason)
    _fallback_logged = True


def _add_cpu_facts(features: Features, facts: CpuFacts, live: bool) -> None:
    global _live_flags
    if live:
        # The live facts never change, so neither do their Fact objects.
        if _live_flags is None:
            _live_flags = {name: Fact("true", origin) for name, origin in facts.flags.items()}
        features.flags["cpuid"] = dict(_live_flags)
    else:
        for name, origin in facts.flags.items():
            features.flag("cpuid", name, origin)
    if facts.avx10_level > 0:
        features.attribute("cpuid", "AVX10_VERSION", str(facts.avx10_level), facts.avx10_origin)
    if facts.vendor is not None:
        features.attribute("model", "vendor_id", facts.vendor, facts.identity_origin)
    if facts.family is not None and facts.model is not None:
        features.attribute("model", "family", str(facts.family), facts.identity_origin)
        features.attribute("model", "id", str(facts.model), facts.identity_origin)
    if facts.hypervisor is not None:
        features.attribute("model", "hypervisor", facts.hypervisor, facts.hypervisor_origin)


def _add_x86_host_features(features: Features, facts: CpuFacts, cpus: list[str],
                           ctx: Context) -> None:
    from nodefeatures.sources.cpu import power, security

    features.has_attributes("cstate")
    cstate = power.cstate(ctx.root, ctx.warn)
    if cstate is not None:
        features.attribute("cstate", "enabled", *cstate)
    for name, value in power.pstate(ctx.root).items():
        features.attribute("pstate", name, *value)
    for name, value in security.security(ctx.root, facts).items():
        features.attribute("security", name, *value)
    sst = power.sst_bf(ctx.root, cpus, facts.base_mhz, ctx.warn)
    if sst is not None:
        features.attribute("sst", "bf.enabled", *sst)
    for name, origin in facts.rdt.items():
        features.attribute("rdt", name, "true", origin)
    if "RDTL3CA" in facts.rdt:
        closids = ctx.root.read_line(RESCTRL_L3_CLOSIDS, limit=64)
        if closids is not None and closids.isdigit():
            # As NFD: the default group takes one class of service.
            features.attribute("rdt", "RDTL3CA_NUM_CLOSID", str(int(closids) - 1),
                               f"{ctx.root.display(RESCTRL_L3_CLOSIDS)}={closids}, minus "
                               "the default group")
