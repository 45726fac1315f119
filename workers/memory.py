"""The memory a process tree holds (resident set, from /proc), and the cap a training child runs under.

Why a watchdog on RSS rather than a kernel limit on the child: RLIMIT_AS counts address space, and a
CUDA process reserves tens of GiB of it (unified addressing) before it allocates anything, so any
useful cap breaks GPU jobs; RLIMIT_DATA has the same problem with the driver's private mappings and
is not inherited usefully by torchrun's ranks as a group total; a cgroup needs privileges the
worker does not have in most deployments. The worker sums the RSS of the child and all its
descendants (torchrun and its ranks) at every heartbeat and kills the group past the cap."""
from __future__ import annotations

import os
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _rss(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # gone meanwhile


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    parents = _parents()
    tree, frontier = {pid}, [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(_rss(p) for p in tree)


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * PAGE


def child_cap(setting: int) -> int | None:
    """The cap in bytes for DARKMATTER_CHILD_MEMORY_BYTES: 0 is 3/4 of the machine's memory,
    a negative value no cap."""
    if setting < 0:
        return None
    return setting or physical_memory() * 3 // 4


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (v2 memory.events, or v1 memory.oom_control); None where the counter cannot be read. A child
    that dies of SIGKILL while the counter moved was killed for memory, not lost."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    for candidate in candidates:
        try:
            for entry in candidate.read_text().splitlines():
                name, _, value = entry.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None
