#!/usr/bin/env python3
"""Benchmark: the CPU a ``file_roll`` sink's write journal costs per batch.

    python bench/journal_cost.py [--batches 200] [--events 10000] [--ranges 10]

A file_roll sink journals, per write, which events go where (``to_write``, ``writing``, ``written`` of
:mod:`workers.sinks.journal`).  This runs those three calls on a real journal in a temporary directory (not
fsynced per record, as file_roll's), for batches of ``--events`` events made of ``--ranges`` id ranges (what an
``exec``, ``http`` or ``seq`` source gives: a random prefix and numbered events, gathered from ``--ranges``
channel messages), once with the ids as ranges (``journal_ids.compact``, what file_roll does) and once with one
string per event (what it did before), and prints the milliseconds per batch of each.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.event import IdChain, IdRange  # noqa: E402  (the repository's root is put on the path first)
from workers.sinks import journal_ids  # noqa: E402
from workers.sinks.journal import Journal  # noqa: E402


def batch_ids(events: int, ranges: int) -> IdChain:
    per = events // ranges
    return IdChain([IdRange(uuid.uuid4().hex, 0, per) for _ in range(ranges)])


def per_batch_ms(directory: Path, batches: int, events: int, ranges: int, as_strings: bool) -> float:
    journal = Journal(directory, keep=64, sync=False)
    journal.open()
    try:
        journal.opened("out-1", "out-1")
        started = time.perf_counter()
        for n in range(batches):
            chain = batch_ids(events, ranges)
            ids = list(chain) if as_strings else journal_ids.compact(chain)
            keep = journal.to_write(ids)
            if keep is not None:
                raise SystemExit("journal_cost: a fresh batch was seen as written already")
            journal.writing("out-1", n * 100, n * 100 + 100, ids)
            journal.written(ids)
        return (time.perf_counter() - started) * 1000 / batches
    finally:
        journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--ranges", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flumery-journal-") as work:
        for as_strings in (False, True):
            ms = per_batch_ms(Path(work) / ("strings" if as_strings else "ranges"), args.batches, args.events,
                              args.ranges, as_strings)
            form = "one string per event" if as_strings else "ranges"
            print(f"journal work per {args.events:,}-event batch ({args.ranges} ranges), ids as {form}: "
                  f"{ms:.3f} ms")


if __name__ == "__main__":
    main()
