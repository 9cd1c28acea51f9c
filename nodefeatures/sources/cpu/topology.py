"""`cpu-hardware_multithreading`: whether any online core runs more than one thread."""

from __future__ import annotations

from nodefeatures.discovery.hostroot import HostRoot

CPU_DEVICES = "sys/bus/cpu/devices"


def hardware_multithreading(root: HostRoot, cpus: list[str]) -> tuple[str, str] | None:
    """("true"/"false", origin), or None when the topology cannot be read.

    A CPU whose siblings list names more than itself (`0,4` or `0-1`) runs SMT. The first
    such CPU settles the answer. Offline CPUs have no topology directory and are skipped.
    """
    checked = 0
    for cpu in cpus:
        topology = f"{CPU_DEVICES}/{cpu}/topology"
        siblings = root.read_line(f"{topology}/thread_siblings_list")
        if siblings is None:
            if root.read_line(f"{CPU_DEVICES}/{cpu}/online") == "0":
                continue  # the kernel removes an offline CPU's topology directory
            return None  # an online CPU whose topology cannot be read: no answer
        checked += 1
        if "," in siblings or "-" in siblings:
            return "true", f"{root.display(topology)}/thread_siblings_list={siblings}"
    if not checked:
        return None
    return "false", f"{root.display(CPU_DEVICES)}/*/topology/thread_siblings_list: " \
                    f"one thread per core on {checked} CPUs"


def _cpu_list(text: str) -> set[int] | None:
    """CPU numbers of a sysfs cpulist (`0-3,8`), or None when it is not one."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        cpus.update(range(int(low), int(high if dash else low) + 1))
    return cpus


def socket_count(root: HostRoot, cpus: list[str]) -> tuple[str, str] | None:
    """(number of distinct physical_package_id values, origin), or None when unknown.

    One CPU's `package_cpus_list` names every CPU of its package, so a package costs
    two reads, not one per CPU. Offline CPUs (no topology directory) are skipped.
    """
    packages: set[str] = set()
    covered: set[int] = set()
    for cpu in cpus:
        number = cpu.removeprefix("cpu")
        if number.isdigit() and int(number) in covered:
            continue
        topology = f"{CPU_DEVICES}/{cpu}/topology"
        package = root.read_line(f"{topology}/physical_package_id")
        if package is None:
            if root.read_line(f"{CPU_DEVICES}/{cpu}/online") == "0":
                continue
            return None
        packages.add(package)
        siblings = root.read_line(f"{topology}/package_cpus_list")
        if siblings:
            covered |= _cpu_list(siblings) or set()
    if not packages:
        return None
    return str(len(packages)), (f"{root.display(CPU_DEVICES)}/*/topology/physical_package_id: "
                                f"{len(packages)} distinct")
