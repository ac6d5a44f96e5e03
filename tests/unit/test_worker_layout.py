"""``--sink-workers``: how an agent's sink units are spread over worker processes (app/worker_layout.py)."""
from __future__ import annotations

import pytest

from app.worker_layout import parse_layout, plan, usable_cores, worker_count

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


def test_usable_cores_counts_the_cores_this_process_may_run_on():
    import os
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1
