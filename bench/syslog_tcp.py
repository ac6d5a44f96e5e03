#!/usr/bin/env python3
"""Benchmark: syslog over TCP into files, Flumery beside syslog-ng, in the same run.

    python bench/syslog_tcp.py [--lines 1000000] [--connections 1] [--channel file|memory] [--work DIR]
                               [--no-syslog-ng] [--install-syslog-ng]

The workload is N RFC 3164 lines of about 140 bytes (``<13>Jan  1 00:00:00 web1 app[1234]: GET /...``), built in
memory and sent as fast as TCP takes them over ``--connections`` connections to 127.0.0.1.

Flumery: an agent on its embedded broker, ``syslogtcp`` (``batchSize`` 1000) -> a ``file`` channel (Redis,
``appendfsync always``; ``--channel memory`` for ``everysec``) -> ``file_roll`` (fsync per batch of 10000).
syslog-ng (Debian ``syslog-ng-core``): a ``network()`` source on TCP into a ``file()`` destination, once tuned
for throughput and once with default options.  syslog-ng does not fsync per batch; Flumery's file channel and
file_roll do.  Both write the message part (``app[1234]: GET ...``, syslog-ng's ``${MSGHDR}${MSG}``, Flume's body
with ``keepFields`` none), so the outputs are byte-identical and checked against the sent lines.

The clock starts when the first byte is sent (the agent or syslog-ng is already listening) and stops when every
byte is in the output files.  syslog-ng is only run if it is installed; ``--install-syslog-ng`` installs it first
with ``apt-get install -y syslog-ng-core`` (root only; it replaces rsyslog if that is installed).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.broker import free_port  # noqa: E402  (the repository is not installed when run as a script)

FLUMERY_CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.type = syslogtcp
b.sources.r1.host = 127.0.0.1
b.sources.r1.port = {port}
b.sources.r1.batchSize = 1000
b.sources.r1.channels = c1
b.channels.c1.type = {channel}
b.channels.c1.capacity = 200000
b.channels.c1.transactionCapacity = 10000
b.sinks.k1.type = file_roll
b.sinks.k1.channel = c1
b.sinks.k1.sink.directory = {out}
b.sinks.k1.sink.rollInterval = 0
b.sinks.k1.sink.batchSize = 10000
"""

SYSLOG_NG_TUNED = """\
@version: 3.38
options {{ keep-hostname(yes); flush-lines(1000); log-fifo-size(200000); }};
source s_net {{ network(ip("127.0.0.1") port({port}) transport("tcp") max-connections(100)
                log-iw-size(200000) log-fetch-limit(1000)); }};
destination d_out {{ file("{out}" template("${{MSGHDR}}${{MSG}}\\n")); }};
log {{ source(s_net); destination(d_out); }};
"""

SYSLOG_NG_DEFAULT = """\
@version: 3.38
source s_net {{ network(ip("127.0.0.1") port({port}) transport("tcp")); }};
destination d_out {{ file("{out}" template("${{MSGHDR}}${{MSG}}\\n")); }};
log {{ source(s_net); destination(d_out); }};
"""

PATHS = ("/index.html", "/img/logo.png", "/api/v1/items?page=2", "/css/site.css", "/login")


def workload(lines: int) -> tuple[list[bytes], bytes]:
    """(the lines to send, what both outputs must hold: each message part and a newline)."""
    sent, bodies = [], []
    for i in range(lines):
        body = (f"app[{1000 + i % 9000}]: GET {PATHS[i % len(PATHS)]} HTTP/1.1 200 {i % 50000} "
                f"\"Mozilla/5.0 (X11; Linux x86_64)\" request {i:09d}")
        sent.append(f"<13>Jan {1 + i % 28:2d} 00:00:00 web{i % 10} {body}\n".encode())
        bodies.append(body.encode() + b"\n")
    return sent, b"".join(bodies)


def send(port: int, lines: list[bytes], connections: int) -> None:
    """Send ``lines`` over ``connections`` TCP connections at once (line i on connection i % connections)."""
    def one(part: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            data = b"".join(part)
            for start in range(0, len(data), 1 << 20):
                sock.sendall(data[start:start + (1 << 20)])
    threads = [threading.Thread(target=one, args=(lines[k::connections],)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_listening(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} (exit code {process.poll()})") from None
            time.sleep(0.05)


def wait_for_bytes(paths_fn, total: int, timeout_s: float, process: subprocess.Popen) -> None:
    start = time.monotonic()
    while True:
        size = sum(p.stat().st_size for p in paths_fn() if p.exists())
        if size >= total:
            return
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} after {size} of {total} bytes")
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"timed out with {size} of {total} bytes")
        time.sleep(0.02)


def digest(data: bytes) -> tuple[int, str]:
    """(line count, order-independent digest): equal iff the same lines, whatever their order."""
    lines = sorted(data.splitlines())
    return len(lines), hashlib.sha256(b"\n".join(lines)).hexdigest()


def timed(process: subprocess.Popen, port: int, lines: list[bytes], connections: int, outputs, total: int) -> float:
    wait_listening(port, process)
    started = time.monotonic()
    send(port, lines, connections)
    wait_for_bytes(outputs, total, 900, process)
    return time.monotonic() - started


def run_flumery(work: Path, lines, expected: bytes, connections: int, channel: str) -> float:
    out, port = work / "flumery-out", free_port()
    for stale in (out, work / "data"):
        shutil.rmtree(stale, ignore_errors=True)
    conf = work / "bench.conf"
    conf.write_text(FLUMERY_CONF.format(port=port, out=out, channel=channel))
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(work / "data"),
           "--log-level", "WARNING"]
    agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    try:
        seconds = timed(agent, port, lines, connections, lambda: list(out.glob("*")), len(expected))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    check("flumery", b"".join(p.read_bytes() for p in sorted(out.glob("*"))), expected)
    return seconds


def syslog_ng_binary() -> str | None:
    binary = shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"
    return binary if os.path.exists(binary) else None


def run_syslog_ng(work: Path, lines, expected: bytes, connections: int, template: str) -> float:
    out, port = work / "syslog-ng-out.log", free_port()
    for stale in (out, work / "syslog-ng.persist"):
        stale.unlink(missing_ok=True)
    conf = work / "syslog-ng.conf"
    conf.write_text(template.format(port=port, out=out))
    cmd = [syslog_ng_binary(), "-F", "--no-caps", "-f", str(conf), "-R", str(work / "syslog-ng.persist"),
           "-p", str(work / "syslog-ng.pid"), "-c", str(work / "syslog-ng.ctl")]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "syslog-ng.log", "w"))
    try:
        seconds = timed(process, port, lines, connections, lambda: [out], len(expected))
    finally:
        process.terminate()
        process.wait(30)
    check("syslog-ng", out.read_bytes(), expected)
    return seconds


def check(name: str, got: bytes, expected: bytes) -> None:
    (have, got_digest), (want, want_digest) = digest(got), digest(expected)
    if (have, got_digest) != (want, want_digest):
        raise SystemExit(f"FAIL: {name} wrote {have:,} lines, not the {want:,} sent (or different lines)")
    print(f"{name}: all {want:,} messages arrived exactly once")


def report(name: str, seconds: float, count: int, size: int) -> str:
    return f"{name:<44} {seconds:7.2f} s  {count / seconds:10,.0f} events/s  {size / seconds / 2**20:6.1f} MiB/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--channel", choices=("file", "memory"), default="file")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--no-syslog-ng", action="store_true")
    parser.add_argument("--install-syslog-ng", action="store_true",
                        help="apt-get install -y syslog-ng-core first if it is missing (root)")
    args = parser.parse_args()

    if args.install_syslog_ng and not syslog_ng_binary() and not args.no_syslog_ng:
        print("installing syslog-ng: apt-get install -y syslog-ng-core", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "syslog-ng-core"], check=True,
                       stdout=subprocess.DEVNULL)
    work = Path(args.work or tempfile.mkdtemp(prefix="flumery-syslog-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    lines, expected = workload(args.lines)
    size = sum(map(len, lines))
    print(f"workload: {args.lines:,} syslog lines, {size / 2**20:.1f} MiB, over {args.connections} TCP "
          f"connection(s)")
    results = [report(f"flumery syslogtcp -> {args.channel} channel -> file_roll",
                      run_flumery(work, lines, expected, args.connections, args.channel), args.lines, size)]
    if args.no_syslog_ng:
        pass
    elif not syslog_ng_binary():
        print("syslog-ng not installed (apt-get install syslog-ng-core, or --install-syslog-ng); skipping it")
    else:
        for name, template in (("tuned", SYSLOG_NG_TUNED), ("defaults", SYSLOG_NG_DEFAULT)):
            seconds = run_syslog_ng(work, lines, expected, args.connections, template)
            results.append(report(f"syslog-ng network() -> file(), {name}", seconds, args.lines, size))
    print("\n".join(results))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
