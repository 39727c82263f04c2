"""Finding where memory cgroups can be made, from /proc/self/mountinfo and /proc/self/cgroup."""

from __future__ import annotations

from pathlib import Path

from chaos.cgroups import CGROUP_V1, CGROUP_V2, find_memory_cgroup

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUPS = "4:memory:/process_api/f540\n3:cpuset:/\n0::/\n"


def test_v1_memory_wins_on_a_hybrid_machine_and_groups_go_under_our_own_cgroup():
    found = find_memory_cgroup(V1_MOUNTS, V1_CGROUPS)

    assert found == (Path("/sys/fs/cgroup/memory/process_api/f540"), CGROUP_V1)


def test_v1_in_a_container_whose_mount_root_is_its_own_cgroup():
    mounts = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"

    found = find_memory_cgroup(mounts, "4:memory:/docker/abc\n")

    assert found == (Path("/sys/fs/cgroup/memory"), CGROUP_V1)


def fake_v2(tmp_path: Path, own: str, controllers: str) -> tuple[str, str]:
    (tmp_path / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (tmp_path / own.lstrip("/") / "cgroup.controllers").write_text(controllers)
    return f"30 1 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n", f"0::{own}\n"


def test_v2_groups_go_beside_our_own_cgroup(tmp_path):
    # A v2 group that holds processes may not have children with controllers.
    found = find_memory_cgroup(*fake_v2(tmp_path, "/user.slice/session-1.scope", "cpu memory"))

    assert found == (tmp_path / "user.slice", CGROUP_V2)


def test_v2_groups_go_under_the_root_when_we_are_in_it(tmp_path):
    found = find_memory_cgroup(*fake_v2(tmp_path, "/", "cpu io memory pids"))

    assert found == (tmp_path, CGROUP_V2)


def test_no_memory_controller_means_no_cgroup(tmp_path):
    assert find_memory_cgroup(*fake_v2(tmp_path, "/app", "cpu pids")) is None
    assert find_memory_cgroup("", "0::/\n") is None
