#!/usr/bin/env python3
"""Screenshots of Flower watching a Flumery agent, for the README: ``docs/img/flower-workers.png``,
``flower-broker.png`` and ``flower-task.png``.

    .venv/bin/python docs/flower_screenshots.py [--out docs/img] [--width 1200] [--height 560]

Starts its own redis-server, agent (HTTP source; sinks ``k1``, a file_roll, and ``k2``, a store that takes a
second per batch, so its channel backs up) and ``flumery flower`` behind basic auth on free ports
(``tests/flower_demo.py``, shared with the test that checks these pages), posts 600 events, and has Debian's
headless ``chromium`` (``make browser-deps`` installs it, as root) load the workers page, the broker page and
the page of one of ``k2``'s tasks.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from agents import read_lines, wait_until  # noqa: E402
from flower_demo import FlowerDemo, chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=560)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flumery-flower-") as tmp, FlowerDemo(Path(tmp)) as demo:
        demo.post(60)
        wait_until(lambda: len(read_lines(demo.out)) >= 600, 60, what="k1 to write its 600 events")
        wait_until(lambda: len(demo.api("/api/workers?refresh=1")) >= 2, 60, what="Flower to see both workers")
        task = demo.task_of("k2")
        for name, path, height in (("workers", "/workers", args.height), ("broker", "/broker", args.height * 2 // 3),
                                   ("task", f"/task/{task}", args.height * 3 // 2)):
            target = args.out / f"flower-{name}.png"
            chromium(demo.url + path, f"--screenshot={target}", f"--window-size={args.width},{height}")
            print(f"{target} ({target.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
