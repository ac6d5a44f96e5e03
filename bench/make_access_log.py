#!/usr/bin/env python3
"""Write a synthetic web-server access log (Apache/nginx combined log format), the benchmarks' workload.

    python bench/make_access_log.py OUT [LINES] [--append] [--vhosts] [--seed N]

``LINES`` defaults to 1,000,000 (about 138 bytes a line, 132 MiB).  The same arguments always write the same
bytes (seeded), so every benchmark run reads the same log.  A line:

    10.3.0.3 - - [01/Dec/2026:04:00:00 +0000] "GET /api/v1/items/3 HTTP/1.1" 200 4711 "-" "Mozilla/5.0 (X11; ..."

About 4 % of the lines are server errors (5xx).  ``--vhosts`` starts every other line with Apache's
``vhost_combined`` ``host:port`` (what ``deploy/access-log-routing.conf`` extracts); ``--append`` adds to OUT
instead of replacing it, with timestamps continuing from the lines already there.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

START = time.mktime((2026, 12, 1, 4, 0, 0, 0, 0, 0)) - time.timezone    # 2026-12-01 04:00:00 UTC
# (status, weight): mostly 200, some redirects and client errors, ~4 % server errors
STATUSES = [(200, 86), (304, 4), (301, 1), (404, 5), (500, 2), (502, 1), (503, 1)]
REQUESTS = [("GET", "/api/v1/items/{n}"), ("GET", "/api/v1/items/{n}"), ("GET", "/api/v1/items/{n}/reviews"),
            ("POST", "/api/v1/orders/{n}"), ("GET", "/static/app.{h}.js")]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) curl/8.0", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
          "python-requests/2.32"]
VHOSTS = ["www.example.com:443", "api.example.com:443", "static.example.com:80"]


def _status_by_percent() -> list[int]:
    table = [status for status, weight in STATUSES for _ in range(weight)]
    assert len(table) == 100
    return table


def lines(start: int, count: int, seed: int = 1, vhosts: bool = False):
    """Lines ``start`` .. ``start + count - 1`` of the log of ``seed`` (as str, with their newline).  Line n
    depends only on n and the seed, so a log written in several appends equals one written at once."""
    by_percent = _status_by_percent()
    for n in range(start, start + count):
        mix = (n + seed) * 0x9E3779B97F4A7C15 % 2**64 >> 20         # a cheap, well-spread hash of the line
        method, path = REQUESTS[n % len(REQUESTS)]
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(START + n // 50))
        status = by_percent[mix % 100]
        size = 0 if status == 304 else 200 + mix // 100 % 9800
        host = f"{VHOSTS[n % len(VHOSTS)]} " if vhosts and n % 2 else ""
        yield (f'{host}10.{n % 251}.{n // 251 % 256}.{n % 7 + 1} - - [{when}] '
               f'"{method} {path.format(n=n, h=f"{n:08x}")} HTTP/1.1" {status} {size} "-" '
               f'"{AGENTS[n % len(AGENTS)]}"\n')


def write(out: Path, count: int, append: bool = False, seed: int = 1, vhosts: bool = False) -> int:
    """Write ``count`` lines to ``out`` (after the lines already there with ``append``); the bytes written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    start = 0
    if append and out.exists():
        with open(out, "rb") as f:
            start = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    written = 0
    with open(out, "a" if append else "w", encoding="ascii") as f:
        chunk = []
        for line in lines(start, count, seed, vhosts):
            chunk.append(line)
            if len(chunk) == 10_000:
                written += f.write("".join(chunk))
                chunk = []
        written += f.write("".join(chunk))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("lines", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--append", action="store_true", help="add to OUT instead of replacing it")
    parser.add_argument("--vhosts", action="store_true", help="vhost_combined: 'host:port ' before every other line")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.lines < 0:
        parser.error(f"LINES must be 0 or more (got {args.lines})")
    write(args.out, args.lines, args.append, args.seed, args.vhosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
