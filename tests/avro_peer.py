"""The Avro IPC reference peer (``tests/avro_peer/AvroPeer.java``), built and run for the tests.

Its jars (Avro 1.8.2, avro-ipc 1.8.2, netty 3.9.9, Jackson 1.9.13, slf4j, paranamer) come from the PyPI sdist
``pyspark==2.4.8``, the same file the HDFS tests use: it is looked for, and downloaded once if absent, at
``$FLUMERY_HADOOP_CACHE/pyspark-2.4.8.tar.gz`` (default ``~/.cache/flumery/hadoop``), under a lock file and through a
temporary name, so concurrent test runs never see half a file.  The few jars the peer needs are extracted to
``~/.cache/flumery/avro-peer/jars`` and the class is compiled with ``javac`` (``openjdk-17-jdk-headless``; ``make test``
installs it when run as root) into a folder named by the source's hash, so an edited peer is rebuilt.

A test that needs the peer fails when it cannot be built: nothing here skips.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "avro_peer" / "AvroPeer.java"
SDIST = "pyspark-2.4.8.tar.gz"
JARS = ("avro-1.8.2.jar", "avro-ipc-1.8.2.jar", "netty-3.9.9.Final.jar", "jackson-core-asl-1.9.13.jar",
        "jackson-mapper-asl-1.9.13.jar", "slf4j-api-1.7.16.jar", "paranamer-2.8.jar")


class PeerUnavailable(RuntimeError):
    """The Java peer cannot be built here; the message says what is missing and how to get it."""


def sdist_dir() -> Path:
    return Path(os.environ.get("FLUMERY_HADOOP_CACHE", Path.home() / ".cache" / "flumery" / "hadoop"))


def peer_dir() -> Path:
    return Path(os.environ.get("FLUMERY_AVRO_PEER_CACHE", Path.home() / ".cache" / "flumery" / "avro-peer"))


class _Lock:
    """An exclusive flock on ``path`` (shared by every process that fills the cache)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")

    def __enter__(self):
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def ensure_sdist() -> Path:
    root = sdist_dir()
    sdist = root / SDIST
    if sdist.exists():
        return sdist
    with _Lock(root / f"{SDIST}.lock"):
        if sdist.exists():
            return sdist
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            download = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                 "--no-build-isolation", "-d", tmp, "pyspark==2.4.8"], capture_output=True, text=True)
            got = Path(tmp) / SDIST
            if download.returncode != 0 or not got.exists():
                raise PeerUnavailable(f"could not download the pyspark 2.4.8 sdist (the peer's jars): "
                                      f"{download.stderr.strip()[-500:]}")
            os.replace(got, sdist)          # atomic: other processes see the whole file or none
    return sdist


def ensure_jars() -> Path:
    jars = peer_dir() / "jars"
    if all((jars / name).exists() for name in JARS):
        return jars
    with _Lock(peer_dir() / "jars.lock"):
        if all((jars / name).exists() for name in JARS):
            return jars
        sdist = ensure_sdist()
        partial = Path(tempfile.mkdtemp(dir=peer_dir(), prefix=".jars-"))
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if "/deps/jars/" in member.name and name in JARS:
                    (partial / name).write_bytes(tar.extractfile(member).read())
        missing = [name for name in JARS if not (partial / name).exists()]
        if missing:
            shutil.rmtree(partial)
            raise PeerUnavailable(f"the pyspark sdist {sdist} lacks {', '.join(missing)}")
        shutil.rmtree(jars, ignore_errors=True)
        os.replace(partial, jars)
    return jars


def classpath() -> str:
    """The peer's classpath, building it first if needed; raises PeerUnavailable."""
    javac = shutil.which("javac")
    if not shutil.which("java") or not javac:
        raise PeerUnavailable("no java/javac on PATH: apt-get install -y openjdk-17-jdk-headless (make test does it "
                              "when run as root)")
    jars = ensure_jars()
    libs = [str(jars / name) for name in JARS]
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    classes = peer_dir() / f"classes-{digest}"
    if not (classes / "AvroPeer.class").exists():
        with _Lock(peer_dir() / "classes.lock"):
            if not (classes / "AvroPeer.class").exists():
                partial = Path(tempfile.mkdtemp(dir=peer_dir(), prefix=".classes-"))
                built = subprocess.run([javac, "-nowarn", "-cp", os.pathsep.join(libs), "-d", str(partial),
                                        str(SOURCE)], capture_output=True, text=True)
                if built.returncode != 0:
                    shutil.rmtree(partial)
                    raise PeerUnavailable(f"javac failed on {SOURCE}: {built.stderr[-2000:]}")
                os.replace(partial, classes)
    return os.pathsep.join([str(classes), *libs])


def java_command(*args: str) -> list[str]:
    return ["java", "-Xmx256m", "-cp", classpath(), "AvroPeer", *map(str, args)]


class JavaServer:
    """``AvroPeer server``: Avro's NettyServer + GenericResponder on Flume's protocol, recording to a file."""

    def __init__(self, out: Path | None, deflate: int = 0, fail_first: int = 0, port: int = 0):
        self.out = out
        self.args = java_command("server", port, deflate, str(out) if out else "-", fail_first)
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout_s: float = 30) -> "JavaServer":
        self.process = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        line = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line or not line[0].startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the Java avro peer server did not start (printed {line!r})")
        self.port = int(line[0].split()[1])
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def events(self) -> list[tuple[bytes, dict[str, str]]]:
        """(body, headers) of every event the server answered OK to, in order."""
        from base64 import b64decode
        if self.out is None or not self.out.exists():
            return []
        events = []
        for line in self.out.read_text().splitlines():
            body, _, fields = line.partition("\t")
            headers = {}
            for pair in filter(None, fields.split(",")):
                key, _, value = pair.partition(":")
                headers[b64decode(key).decode()] = b64decode(value).decode()
            events.append((b64decode(body), headers))
        return events


def run_client(host: str, port: int, events: int, batch: int, deflate: int = 0, body_bytes: int = 0,
               timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``AvroPeer client``: NettyTransceiver + GenericRequestor sending ``events`` events to ``host:port``."""
    return subprocess.run(java_command("client", host, port, deflate, events, batch, body_bytes),
                          capture_output=True, text=True, timeout=timeout_s)
