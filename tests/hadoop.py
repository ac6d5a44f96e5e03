"""A real Hadoop 2.7.3 NameNode + DataNode for the tests, started and stopped by them.

The Hadoop jars come from the PyPI sdist ``pyspark==2.4.8`` (its ``deps/jars/``), downloaded once with pip and
extracted once under ``~/.cache/flumery/hadoop`` (``FLUMERY_HADOOP_CACHE`` overrides it).  WebHDFS needs Jersey 1,
which the sdist does not have: Debian's ``libjersey1-*-java`` and ``libjsr311-api-java`` jars take the place of the
sdist's Jersey 2 jars (``make test`` installs them when run as root).  Java 17 runs it
(``openjdk-17-jre-headless``).  Each JVM gets a small heap (``-Xmx384m``).

:class:`HadoopCluster` formats a NameNode in a directory of its own, starts both daemons on free ports and waits
until WebHDFS accepts writes; it can stop and start each daemon separately (the chaos scenarios do).
:meth:`HadoopCluster.text` is ``hdfs dfs -text``: ``org.apache.hadoop.fs.FsShell -text`` on the same classpath,
which decodes SequenceFiles and compressed files with Hadoop's own code.

A test that needs Hadoop fails when it cannot have it.  ``FLUMERY_SKIP_HADOOP=1`` is the one explicit opt-out:
those tests are then skipped, saying why.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SDIST = "pyspark-2.4.8.tar.gz"
JERSEY1 = ("jersey1-core.jar", "jersey1-server.jar", "jersey1-servlet.jar", "jsr311-api.jar")
DEBIAN_JAVA = Path("/usr/share/java")
# Jersey 2 and JAX-RS 2 of the sdist clash with Hadoop 2.7's WebHDFS (Jersey 1); the Spark, Scala and Hive jars
# are not needed and only slow the JVMs' start.
LEFT_OUT = ("jersey-", "javax.ws.rs-api-", "spark-", "scala-", "hive-", "breeze", "kubernetes", "mesos-",
            "parquet-", "orc-", "arrow-", "datanucleus", "derby-", "calcite-")
HEAP = "-Xmx384m"
SKIP_ENV = "FLUMERY_SKIP_HADOOP"


def cache_dir() -> Path:
    return Path(os.environ.get("FLUMERY_HADOOP_CACHE", Path.home() / ".cache" / "flumery" / "hadoop"))


class HadoopUnavailable(RuntimeError):
    """Hadoop cannot be run on this machine; the message says what is missing and how to get it."""


def java_binary() -> str:
    java = shutil.which("java")
    if not java:
        raise HadoopUnavailable("no java on PATH: apt-get install -y openjdk-17-jre-headless (make test does it "
                                "when run as root)")
    return java


def ensure_jars() -> Path:
    """The extracted jars folder (downloading and extracting the sdist the first time); raise
    :class:`HadoopUnavailable` if it cannot be had."""
    root = cache_dir()
    jars = root / "jars"
    if (jars / ".complete").exists():
        return jars
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / SDIST
    if not sdist.exists():
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--no-build-isolation", "-d", str(root), "pyspark==2.4.8"], capture_output=True, text=True)
        if download.returncode != 0 or not sdist.exists():
            raise HadoopUnavailable(f"could not download the pyspark 2.4.8 sdist (Hadoop's jars): "
                                    f"{download.stderr.strip()[-500:]}")
    partial = root / "jars.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if "/deps/jars/" in member.name and name.endswith(".jar") and not name.startswith(LEFT_OUT):
                source = tar.extractfile(member)
                (partial / name).write_bytes(source.read())
    (partial / ".complete").write_text("")
    shutil.rmtree(jars, ignore_errors=True)
    partial.rename(jars)
    return jars


def webapps_root() -> Path:
    """A classpath folder with the empty web.xml files that Hadoop's HTTP servers look for."""
    root = cache_dir() / "webroot"
    for app in ("hdfs", "datanode", "secondary"):
        web_xml = root / "webapps" / app / "WEB-INF" / "web.xml"
        if not web_xml.exists():
            web_xml.parent.mkdir(parents=True, exist_ok=True)
            web_xml.write_text('<?xml version="1.0"?>\n<web-app/>\n')
    return root


def classpath(conf_dir: Path) -> str:
    missing = [name for name in JERSEY1 if not (DEBIAN_JAVA / name).exists()]
    if missing:
        raise HadoopUnavailable(
            f"WebHDFS needs Jersey 1 ({', '.join(missing)} missing from {DEBIAN_JAVA}): apt-get install -y "
            "libjersey1-server-java libjersey1-core-java libjersey1-servlet-java libjsr311-api-java "
            "(make test does it when run as root)")
    jars = ensure_jars()
    parts = [str(conf_dir), str(webapps_root()), *(str(DEBIAN_JAVA / name) for name in JERSEY1),
             str(jars / "*")]
    return os.pathsep.join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _xml(properties: dict[str, str]) -> str:
    rows = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in properties.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'


class HadoopCluster:
    """One NameNode and one DataNode on 127.0.0.1, in ``directory`` (name, data, conf and log folders)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.conf_dir = self.directory / "conf"
        self.rpc_port, self.http_port = free_port(), free_port()
        self.dn_ports = {"dfs.datanode.address": free_port(), "dfs.datanode.http.address": free_port(),
                         "dfs.datanode.ipc.address": free_port()}
        self.processes: dict[str, subprocess.Popen] = {}
        self.java = java_binary()

    # -- addresses --------------------------------------------------------------------------------------------
    @property
    def fs_uri(self) -> str:
        """``hdfs://127.0.0.1:<rpc port>``: what a Flume user writes in hdfs.path."""
        return f"hdfs://127.0.0.1:{self.rpc_port}"

    @property
    def http_address(self) -> str:
        """``127.0.0.1:<http port>``: the NameNode's HTTP server, where WebHDFS answers."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def webhdfs_uri(self) -> str:
        return f"webhdfs://{self.http_address}"

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "core-site.xml").write_text(_xml({
            "fs.defaultFS": self.fs_uri,
            "hadoop.tmp.dir": str(self.directory / "tmp"),
        }))
        (self.conf_dir / "hdfs-site.xml").write_text(_xml({
            "dfs.namenode.name.dir": str(self.directory / "name"),
            "dfs.datanode.data.dir": str(self.directory / "data"),
            "dfs.namenode.rpc-address": f"127.0.0.1:{self.rpc_port}",
            "dfs.namenode.http-address": self.http_address,
            **{key: f"127.0.0.1:{port}" for key, port in self.dn_ports.items()},
            "dfs.replication": "1",
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            "dfs.namenode.safemode.extension": "0",
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            # One DataNode: an append must not look for another one to replace it in its pipeline.
            "dfs.client.block.write.replace-datanode-on-failure.enable": "false",
            "dfs.heartbeat.interval": "1",
            "dfs.namenode.heartbeat.recheck-interval": "5000",
            "dfs.datanode.use.datanode.hostname": "false",
            "dfs.namenode.fs-limits.min-block-size": "0",
        }))
        (self.conf_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO,console\nlog4j.appender.console=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.console.target=System.err\nlog4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n")

    def _java(self, main: str, *args: str) -> list[str]:
        return [self.java, HEAP, "-Djava.net.preferIPv4Stack=true",
                f"-Dhadoop.log.dir={self.directory / 'logs'}", "-cp", classpath(self.conf_dir), main, *args]

    def start(self, timeout_s: float = 120) -> "HadoopCluster":
        self.write_conf()
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        formatted = subprocess.run(self._java("org.apache.hadoop.hdfs.server.namenode.NameNode", "-format",
                                              "-force", "-nonInteractive"),
                                   capture_output=True, text=True, timeout=timeout_s)
        if formatted.returncode != 0:
            raise HadoopUnavailable(f"NameNode -format failed: {formatted.stderr[-2000:]}")
        self.start_namenode()
        self.start_datanode()
        self.wait_ready(timeout_s)
        return self

    def _spawn(self, role: str, main: str) -> None:
        log = open(self.directory / "logs" / f"{role}.log", "ab")
        self.processes[role] = subprocess.Popen(self._java(main), stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        log.close()

    def start_namenode(self) -> None:
        self._spawn("namenode", "org.apache.hadoop.hdfs.server.namenode.NameNode")

    def start_datanode(self) -> None:
        self._spawn("datanode", "org.apache.hadoop.hdfs.server.datanode.DataNode")

    def stop_role(self, role: str, kill: bool = False) -> None:
        process = self.processes.pop(role, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def stop(self) -> None:
        for role in ("datanode", "namenode"):
            self.stop_role(role)

    # -- readiness -----------------------------------------------------------------------------------------------
    def _jmx(self, query: str) -> dict:
        with urllib.request.urlopen(f"http://{self.http_address}/jmx?qry={query}", timeout=5) as response:
            beans = json.loads(response.read())["beans"]
        return beans[0] if beans else {}

    def is_ready(self) -> bool:
        """The NameNode is out of safe mode and a DataNode is live: WebHDFS writes can succeed."""
        try:
            info = self._jmx("Hadoop:service=NameNode,name=NameNodeInfo")
            state = self._jmx("Hadoop:service=NameNode,name=FSNamesystemState")
        except (OSError, ValueError, KeyError):
            return False
        return info.get("Safemode", "x") == "" and state.get("NumLiveDataNodes", 0) >= 1

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            for role, process in self.processes.items():
                if process.poll() is not None:
                    raise HadoopUnavailable(f"the {role} exited ({process.returncode}); see "
                                            f"{self.directory / 'logs' / (role + '.log')}: {self.log_tail(role)}")
            if time.monotonic() > deadline:
                raise HadoopUnavailable(f"HDFS not ready after {timeout_s:.0f} s; namenode log: "
                                        f"{self.log_tail('namenode')}")
            time.sleep(0.2)

    def log_tail(self, role: str, chars: int = 1500) -> str:
        try:
            return (self.directory / "logs" / f"{role}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- reading back with Hadoop's own code ---------------------------------------------------------------------
    def fs_shell(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """``hdfs dfs <args>`` through the same jars; paths relative to this cluster's root."""
        return subprocess.run(self._java("org.apache.hadoop.fs.FsShell", *args), capture_output=True,
                              timeout=timeout_s)

    def text(self, path: str) -> bytes:
        """``hdfs dfs -text PATH``: a file's content as Hadoop decodes it (SequenceFile records as
        ``key<TAB>value`` lines, compressed files decompressed by their extension's codec)."""
        result = self.fs_shell("-text", self.fs_uri + path)
        if result.returncode != 0:
            raise AssertionError(f"hdfs dfs -text {path} failed: {result.stderr.decode(errors='replace')[-2000:]}")
        return result.stdout

    # -- WebHDFS, for tests ----------------------------------------------------------------------------------------
    def webhdfs(self, method: str, path: str, op: str, **params) -> dict:
        query = "&".join([f"op={op}", "user.name=root", *(f"{k}={v}" for k, v in params.items())])
        request = urllib.request.Request(f"http://{self.http_address}/webhdfs/v1{path}?{query}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def list_files(self, path: str = "/") -> list[str]:
        """Every file under ``path`` (recursive), as absolute paths."""
        try:
            listing = self.webhdfs("GET", path, "LISTSTATUS")["FileStatuses"]["FileStatus"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise
        files = []
        for entry in listing:
            child = path.rstrip("/") + "/" + entry["pathSuffix"]
            files += self.list_files(child) if entry["type"] == "DIRECTORY" else [child]
        return sorted(files)

    def read(self, path: str) -> bytes:
        """A file's raw bytes, through WebHDFS (redirected to the DataNode)."""
        url = f"http://{self.http_address}/webhdfs/v1{path}?op=OPEN&user.name=root"
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()


def start_or_explain(directory: Path) -> HadoopCluster:
    """Start a cluster; with ``FLUMERY_SKIP_HADOOP=1`` skip the calling test instead (the explicit opt-out)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the tests against a real HDFS are skipped on purpose")
    cluster = HadoopCluster(directory)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


@pytest.fixture(scope="session")
def hadoop(tmp_path_factory) -> HadoopCluster:
    """One NameNode + DataNode for the whole test session (test modules: ``pytest_plugins = ("hadoop",)``)."""
    cluster = start_or_explain(tmp_path_factory.mktemp("hadoop"))
    yield cluster
    cluster.stop()
