"""How ``flumery agent`` spreads its sink units (sink groups and lone sinks) over sink worker processes:
``--sink-workers auto | per-sink | one | <N>``.

* ``per-sink``: a worker process per unit, each on its own (a crash or a reload of one restarts only it);
* ``one``: a single worker for every unit, a Celery threads-pool thread per unit, as Flume runs its SinkRunners
  in one JVM;
* ``<N>``: at most N workers, the units dealt out in name order (the first, the N+1st, ... share the first);
* ``auto`` (the default): a worker per unit while the machine has a core for each of them beside one for the
  sources and the broker (units <= cores - 1); otherwise ``cores - 1`` workers (at least one), the units dealt out
  as for ``<N>``.  A worker's start costs 0.3-0.5 CPU-s and every worker takes a share of the cores: on 2 cores,
  replicating into 3 sinks with one worker took 1.33-1.70 times one sink's time, with a worker per sink
  1.49-1.87 (eight interleaved rounds, README "Throughput").  Cores are those this process may run on (its CPU
  affinity), fewer where its cgroup (a container's ``--cpus``, a systemd ``CPUQuota=``) allows less CPU time:
  see :func:`usable_cores`.

A worker serving several units is named after them joined by ``+`` in name order (``k1+k3``), the name
``flumery worker`` gives such a worker too; a worker of one unit is named after it.  A reload that adds or removes
a unit may deal the units out anew: every worker whose set of units changed is replaced (each finishes or gives
back its batch).
"""
from __future__ import annotations

import os
from pathlib import Path

Unit = tuple[str, tuple[str, ...]]          # (sink group or lone sink, its sinks)

LAYOUTS = ("auto", "per-sink", "one")


def parse_layout(text: str) -> str | int:
    """``--sink-workers``' value: one of :data:`LAYOUTS`, or a worker count (a positive integer).  Raises
    ValueError naming the bad value."""
    if text in LAYOUTS:
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"--sink-workers: {text!r} is not one of {', '.join(LAYOUTS)} or a number of workers (1 or "
                     "more)")


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may use: those it may run on (its CPU affinity, which taskset and cpusets narrow),
    fewer if the CPU quota of its cgroup or of an ancestor is tighter (whole cores, rounded down, at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota_cores(cgroup_root, own)
    return cores if quota is None else max(1, min(cores, int(quota)))


def cpu_quota_cores(cgroup_root: Path, own: Path) -> float | None:
    """The tightest CPU quota on this process's cgroup and its ancestors, in cores (quota / period), or None where
    there is none or it cannot be read.  cgroup v2: ``cpu.max`` (``max 100000`` or ``200000 100000``); v1:
    ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``, under the ``cpu`` controller's mount."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            mounts = [cgroup_root, cgroup_root / "unified"]     # v2 alone, or beside v1 (hybrid)
            read = _v2_quota
        elif "cpu" in controllers.split(","):
            mounts = [cgroup_root / controllers, cgroup_root / "cpu"]
            read = _v1_quota
        else:
            continue
        mount = next((m for m in mounts if m.is_dir()), None)
        if mount is None:
            continue
        directory = mount / path.lstrip("/")
        for level in [directory, *directory.parents]:       # the cgroup, then its ancestors up to the mount
            quota = read(level)
            if quota is not None:
                quotas.append(quota)
            if level == mount:
                break
    return min(quotas) if quotas else None


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        if quota == "max":
            return None
        quota_us, period_us = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def worker_count(layout: str | int, units: int, cores: int) -> int:
    """How many worker processes serve ``units`` sink units under ``layout`` on ``cores`` cores."""
    if units == 0:
        return 0
    if layout == "per-sink":
        wanted = units
    elif layout == "one":
        wanted = 1
    elif layout == "auto":
        wanted = cores - 1          # a worker per unit while units <= cores - 1 (the min below)
    else:
        wanted = layout
    return max(1, min(units, wanted))


def plan(units: list[Unit], layout: str | int, cores: int) -> dict[str, list[Unit]]:
    """The worker processes serving ``units``, by worker name: the units each serves, in name order."""
    ordered = sorted(units)
    count = worker_count(layout, len(ordered), cores)
    groups = [ordered[i::count] for i in range(count)]
    return {"+".join(name for name, _ in group): group for group in groups}
