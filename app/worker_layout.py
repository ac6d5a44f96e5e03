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
  1.49-1.87 (eight interleaved rounds, README "Throughput").  Cores are those this process may run on
  (its CPU affinity); a container's CPU quota is not looked at: give the layout explicitly there.

A worker serving several units is named after them joined by ``+`` in name order (``k1+k3``), the name
``flumery worker`` gives such a worker too; a worker of one unit is named after it.  A reload that adds or removes
a unit may deal the units out anew: every worker whose set of units changed is replaced (each finishes or gives
back its batch).
"""
from __future__ import annotations

import os

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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which taskset and cpusets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not Linux
        return os.cpu_count() or 1


def worker_count(layout: str | int, units: int, cores: int) -> int:
    """How many worker processes serve ``units`` sink units under ``layout`` on ``cores`` cores."""
    if units == 0:
        return 0
    if layout == "per-sink":
        wanted = units
    elif layout == "one":
        wanted = 1
    elif layout == "auto":
        wanted = units if units <= cores - 1 else cores - 1
    else:
        wanted = layout
    return max(1, min(units, wanted))


def plan(units: list[Unit], layout: str | int, cores: int) -> dict[str, list[Unit]]:
    """The worker processes serving ``units``, by worker name: the units each serves, in name order."""
    ordered = sorted(units)
    count = worker_count(layout, len(ordered), cores)
    groups = [ordered[i::count] for i in range(count)]
    return {"+".join(name for name, _ in group): group for group in groups}
