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
