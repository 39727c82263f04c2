"""The cgroup file system: which version holds the memory controller, and where to add groups.

`find_memory_cgroup` reads /proc/self/mountinfo and /proc/self/cgroup (passed in as text,
so the rules can be tested on any machine) and answers where this process may create memory
cgroups and with which files (`CGROUP_V1` or `CGROUP_V2`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CgroupLayout:
    """The files of one cgroup version's memory controller."""

    mechanism: str
    limit_file: str
    usage_file: str
    events_file: str
    swap_limit_file: str
    unlimited: str


CGROUP_V1 = CgroupLayout(
    "cgroup-v1",
    limit_file="memory.limit_in_bytes",
    usage_file="memory.usage_in_bytes",
    events_file="memory.oom_control",
    swap_limit_file="memory.memsw.limit_in_bytes",
    unlimited="-1",
)
CGROUP_V2 = CgroupLayout(
    "cgroup-v2",
    limit_file="memory.max",
    usage_file="memory.current",
    events_file="memory.events",
    swap_limit_file="memory.swap.max",
    unlimited="max",
)


@dataclass
class _Mount:
    root: str
    point: Path
    fstype: str
    options: set[str] = field(default_factory=set)


def _mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = Path(fields[4].replace("\\040", " "))
        mounts.append(_Mount(fields[3], point, tail[0], set(tail[2].split(","))))
    return mounts


def find_memory_cgroup(mountinfo: str, proc_cgroup: str) -> tuple[Path, CgroupLayout] | None:
    """Where this process may create memory cgroups, and which version they are, or None.

    mountinfo and proc_cgroup are the texts of /proc/self/mountinfo and /proc/self/cgroup.
    v1 (a `cgroup` mount with the memory option) wins over v2: on a hybrid machine the
    memory controller is bound to v1 and the unified mount has none. Under v2 the groups go
    beside this process's own cgroup (a v2 group with processes may not have children with
    controllers), or under the root when this process is in the root.
    """
    own = {}
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        own[hierarchy if hierarchy == "0" else controllers] = path
    v1_path = next((p for c, p in own.items() if "memory" in c.split(",")), None)
    for mount in _mounts(mountinfo):
        if mount.fstype == "cgroup" and "memory" in mount.options and v1_path is not None:
            return _under(mount, v1_path), CGROUP_V1
    for mount in _mounts(mountinfo):
        if mount.fstype == "cgroup2" and "0" in own:
            mine = _under(mount, own["0"])
            parent = mine if mine == mount.point else mine.parent
            try:
                controllers = (mine / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "memory" in controllers:
                return parent, CGROUP_V2
    return None


def _under(mount: _Mount, path: str) -> Path:
    """The directory of cgroup path in a mount whose root is mount.root."""
    relative = os.path.relpath(path, mount.root) if path.startswith(mount.root) else path
    relative = relative.lstrip("/")
    return mount.point if relative in ("", ".") else mount.point / relative
