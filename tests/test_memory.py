"""The memory aeflow plans batches and sample sizes by: the host's MemAvailable, and in a container (cgroup
v2) the limit left, whichever is smaller."""

from __future__ import annotations

from aeflow.checks import available_memory

MIB = 1 << 20


def fake_system(tmp_path, available_kb=8 << 20, limit=None, current=None, inactive_file=0):
    """A /proc/meminfo and a cgroup v2 folder (memory.max, memory.current, memory.stat) under ``tmp_path``."""
    (tmp_path / "meminfo").write_text(f"MemTotal:       16000000 kB\nMemFree:         1000 kB\n"
                                      f"MemAvailable:   {available_kb} kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    if limit is not None:
        (cgroup / "memory.max").write_text(f"{limit}\n")
        (cgroup / "memory.current").write_text(f"{current}\n")
        (cgroup / "memory.stat").write_text(f"anon 1000\nfile 5000\ninactive_file {inactive_file}\nactive_file 9\n")
    return str(tmp_path / "meminfo"), str(cgroup)


def test_a_containers_limit_is_what_is_available(tmp_path):
    """8 GiB free on the host, but a 512 MiB container limit of which 400 MiB is used: 112 MiB."""
    assert available_memory(*fake_system(tmp_path, limit=512 * MIB, current=400 * MIB)) == 112 * MIB


def test_the_page_cache_a_container_holds_counts_as_available(tmp_path):
    """memory.current counts the page cache of files read; the inactive part is reclaimed before the OOM killer."""
    paths = fake_system(tmp_path, limit=512 * MIB, current=500 * MIB, inactive_file=300 * MIB)
    assert available_memory(*paths) == 312 * MIB


def test_the_host_figure_where_it_is_smaller_or_there_is_no_limit(tmp_path):
    for name, kw in (("small", dict(available_kb=1024, limit=512 * MIB, current=0)), ("max", dict(limit="max")),
                     ("none", {})):
        (tmp_path / name).mkdir()
        assert available_memory(*fake_system(tmp_path / name, **kw)) == (1 * MIB if name == "small" else 8 << 30)


def test_unknown_without_meminfo_or_a_readable_limit(tmp_path):
    assert available_memory(str(tmp_path / "no_meminfo"), str(tmp_path / "no_cgroup")) is None
    meminfo, cgroup = fake_system(tmp_path, limit="garbage", current=1)
    assert available_memory(str(tmp_path / "no_meminfo"), cgroup) is None
    assert available_memory(meminfo, cgroup) == 8 << 30
