"""``--sink-workers``: how an agent's sink units are spread over worker processes (app/worker_layout.py)."""
from __future__ import annotations

import os

import pytest

from app.worker_layout import cpu_quota_cores, parse_layout, plan, usable_cores, worker_count

UNITS = [("k3", ("k3",)), ("g1", ("k1", "k2")), ("k4", ("k4",)), ("k5", ("k5",))]


@pytest.mark.parametrize("text, layout", [("auto", "auto"), ("per-sink", "per-sink"), ("one", "one"), ("3", 3)])
def test_parse_layout_takes_the_named_layouts_and_worker_counts(text, layout):
    assert parse_layout(text) == layout


@pytest.mark.parametrize("text", ["0", "-1", "two", "", "per_sink", "1.5"])
def test_parse_layout_refuses_anything_else_naming_the_value(text):
    with pytest.raises(ValueError, match=f"--sink-workers: {text!r} is not one of auto, per-sink, one"):
        parse_layout(text)


@pytest.mark.parametrize("cores, units, workers", [
    (1, 3, 1), (2, 1, 1), (2, 2, 1), (2, 3, 1), (4, 3, 3), (4, 4, 3), (8, 20, 7), (64, 5, 5), (3, 0, 0)])
def test_auto_runs_a_worker_per_unit_only_while_a_core_is_left_for_the_sources(cores, units, workers):
    assert worker_count("auto", units, cores) == workers


@pytest.mark.parametrize("layout, units, workers", [
    ("per-sink", 5, 5), ("one", 5, 1), (2, 5, 2), (9, 5, 5), ("per-sink", 0, 0), (2, 0, 0)])
def test_explicit_layouts_ignore_the_cores(layout, units, workers):
    for cores in (1, 2, 16):
        assert worker_count(layout, units, cores) == workers


def test_units_are_dealt_out_in_name_order_and_workers_named_after_theirs():
    assert plan(UNITS, 2, cores=16) == {"g1+k4": [("g1", ("k1", "k2")), ("k4", ("k4",))],
                                        "k3+k5": [("k3", ("k3",)), ("k5", ("k5",))]}
    assert list(plan(UNITS, "per-sink", cores=1)) == ["g1", "k3", "k4", "k5"]
    assert list(plan(UNITS, "one", cores=16)) == ["g1+k3+k4+k5"]
    assert list(plan(UNITS, "auto", cores=2)) == ["g1+k3+k4+k5"]
    assert list(plan(UNITS, "auto", cores=3)) == ["g1+k4", "k3+k5"]
    assert plan([], "auto", cores=2) == {}


def test_the_order_of_the_units_in_the_file_does_not_change_the_plan():
    assert plan(list(reversed(UNITS)), 3, cores=2) == plan(UNITS, 3, cores=2)


def test_usable_cores_counts_the_cores_this_process_may_run_on(tmp_path):
    no_cgroup = tmp_path / "missing"
    assert usable_cores(tmp_path, no_cgroup) == len(os.sched_getaffinity(0)) >= 1


def cgroup_tree(tmp_path, own: str, files: dict[str, str]):
    """A fake cgroup mount under ``tmp_path``: ``own`` is /proc/self/cgroup's text, ``files`` path -> content."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "own").write_text(own)
    return tmp_path, tmp_path / "own"


def test_a_cgroup_v2_quota_on_an_ancestor_limits_the_cores(tmp_path):
    root, own = cgroup_tree(tmp_path, "0::/system.slice/flumery.service\n", {
        "cgroup.controllers": "cpu io memory\n",
        "system.slice/cpu.max": "150000 100000\n",                # 1.5 cores for the whole slice
        "system.slice/flumery.service/cpu.max": "max 100000\n"})
    assert cpu_quota_cores(root, own) == 1.5
    assert usable_cores(root, own) == 1                          # whole cores, rounded down


def test_a_cgroup_v1_quota_under_the_cpu_controllers_mount(tmp_path):
    root, own = cgroup_tree(tmp_path, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cpu_quota_cores(root, own) == 0.5
    assert usable_cores(root, own) == 1                          # never less than one


@pytest.mark.parametrize("files", [
    {"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n"},               # v2, no quota
    {"cgroup.controllers": "cpu\n", "cpu.max": "garbage\n"},                  # unreadable: ignored
    {"cgroup.controllers": "cpu\n", "cpu.max": "100000 0\n"},                 # a zero period: ignored
    {"cgroup.controllers": "cpu\n"}])                                          # no cpu.max (the root)
def test_no_quota_leaves_the_affinity(tmp_path, files):
    root, own = cgroup_tree(tmp_path, "not a cgroup line\n0::/\n", files)
    assert cpu_quota_cores(root, own) is None
    assert usable_cores(root, own) == len(os.sched_getaffinity(0))
