"""Stand-in store servers for the store sinks' tests, the chaos runs and the benchmark.

No real Elasticsearch, MongoDB or HBase can be installed on these machines; the closest real implementations
that install from PyPI are started here, each as its own process on a free port of 127.0.0.1:

* :class:`OsmemServer`: ``osmem-server`` (an in-memory server of the OpenSearch REST API, from the
  ``osmem-server`` wheel); it keeps nothing across a restart, so an outage is a SIGSTOP/SIGCONT of the process;
* :class:`SecantusServer`: ``secantusd-py`` (a MongoDB-wire server on WiredTiger, from ``secantusdb``), with a
  storage directory so it can be killed and restarted with its data;
* :class:`HBaseGateway`: ``tests/hbase_gateway.py``, an HBase Thrift1 gateway written for these tests with
  thriftpy2 on happybase's own ``Hbase.thrift``, keeping its tables in memory (and in a snapshot file across a
  clean restart).

The session-scoped pytest fixtures at the end start each once per test session; test modules import them.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import happybase
import pytest
from opensearchpy import OpenSearch
from osmem_server import resolve_binary
from pymongo import MongoClient

from app.broker import free_port

TESTS = Path(__file__).resolve().parent


def _wait_port(port: int, process: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode} before it listened") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s") from None
            time.sleep(0.05)


class StoreServer:
    """A server process on ``127.0.0.1:port``: start, stop (SIGTERM, or SIGKILL), pause and resume."""

    name = "store"

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "StoreServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _wait_port(self.port, self.process, self.name)
        self.ready()
        return self

    def ready(self) -> None:
        """Wait until the server answers requests (listening may come first)."""

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing until :meth:`resume`.  Returns once the
        kernel reports every thread of it stopped (the signal alone returns before)."""
        os.kill(self.process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not self._all_stopped():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not stop")
            time.sleep(0.01)

    def _all_stopped(self) -> bool:
        tasks = Path(f"/proc/{self.process.pid}/task")
        try:
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
        except (OSError, IndexError):
            return False
        return all(state in ("T", "t") for state in states)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


class OsmemServer(StoreServer):
    """osmem-server: the OpenSearch REST API, in memory."""

    name = "osmem-server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [resolve_binary(), "-addr", f"127.0.0.1:{self.port}", "-no-stdin-watch"]

    def client(self):
        return OpenSearch(hosts=[self.url], timeout=60)


class SecantusServer(StoreServer):
    """secantusdb's ``secantusd-py``: MongoDB's wire protocol on WiredTiger, data under ``directory/data``."""

    name = "secantusd"

    def __init__(self, directory: Path, port: int | None = None, sync_on_commit: bool = True,
                 extra: list[str] | None = None):
        super().__init__(directory, port)
        self.sync_on_commit = sync_on_commit
        self.extra = extra or []

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        binary = Path(sys.executable).parent / "secantusd-py"
        return [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path",
                str(self.directory / "data"), "--standalone", "--log-level", "WARNING",
                *(["--sync-on-commit"] if self.sync_on_commit else []), *self.extra]

    def ready(self) -> None:
        client = self.client(timeout_ms=30000)
        try:
            client.admin.command("ping")
        finally:
            client.close()

    def client(self, timeout_ms: int = 10000):
        return MongoClient(self.uri, serverSelectionTimeoutMS=timeout_ms)


class HBaseGateway(StoreServer):
    """tests/hbase_gateway.py: an HBase Thrift1 gateway (happybase's Hbase.thrift) with in-memory tables; a clean
    stop (SIGTERM) saves them to ``directory/snapshot.json`` and the next start loads them."""

    name = "hbase-gateway"

    def command(self) -> list[str]:
        return [sys.executable, str(TESTS / "hbase_gateway.py"), "--port", str(self.port),
                "--snapshot", str(self.directory / "snapshot.json")]

    def connection(self):
        return happybase.Connection("127.0.0.1", self.port, timeout=30000)


# --- pytest fixtures: one server of each kind per test session ----------------------------------------------

@pytest.fixture(scope="session")
def osmem(tmp_path_factory):
    """An osmem-server (OpenSearch API stand-in) for the whole session."""
    server = OsmemServer(tmp_path_factory.mktemp("osmem")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def secantus(tmp_path_factory):
    """A secantusd (MongoDB stand-in) for the whole session, with test commands (failpoints) enabled."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus"), extra=["--enable-test-commands"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hbase_gateway(tmp_path_factory):
    """The tests' HBase Thrift1 gateway for the whole session."""
    server = HBaseGateway(tmp_path_factory.mktemp("hbase")).start()
    yield server
    server.stop()


# --- probes: a stand-in store with a Flumery sink on it, read back by event body (chaos runs, benchmark) ------

class StoreProbe:
    """A stand-in server, the sink properties that write to it, and a way to read back what is stored: one body
    per stored document or row, so that counting bodies finds events stored twice under different ids."""

    kind = ""
    outage_note = ""

    def __init__(self, directory: Path):
        self.directory = directory

    def start(self) -> "StoreProbe":
        raise NotImplementedError

    def sink_properties(self) -> dict[str, str]:
        raise NotImplementedError

    def sink_conf(self, agent: str = "a1", sink: str = "k1", channel: str = "c1", batch_size: int = 500,
                  **overrides: str) -> str:
        props = {"type": self.kind, "channel": channel, **self.sink_properties(), **overrides}
        props[self.batch_key] = str(batch_size)
        return "".join(f"{agent}.sinks.{sink}.{k} = {v}\n" for k, v in props.items())

    batch_key = "batchSize"

    def bodies(self) -> list[bytes]:
        raise NotImplementedError

    def count(self) -> int:
        return len(self.bodies())

    def outage(self, seconds: float) -> None:
        """Make the store unavailable for ``seconds``, then available again (with its data)."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []

    def stop(self) -> None:
        self.server.stop()


class ElasticsearchProbe(StoreProbe):
    kind = "elasticsearch"
    index = "chaos"
    outage_note = "osmem-server paused with SIGSTOP (it keeps data only in memory, so it cannot be restarted)"

    def start(self) -> "ElasticsearchProbe":
        self.server = OsmemServer(self.directory / "osmem").start()
        return self

    def sink_properties(self) -> dict[str, str]:
        return {"hostNames": f"127.0.0.1:{self.server.port}", "indexName": self.index,
                "indexNameBuilder": "SimpleIndexNameBuilder", "requestTimeout": "5000"}

    def _hits(self, fields: list[str]):
        client = self.server.client()
        client.indices.refresh(index=self.index)
        body = {"query": {"match_all": {}}, "sort": ["_doc"], "size": 10000, "_source": fields, "version": True}
        page = client.search(index=self.index, body=body, scroll="1m")
        try:
            while page["hits"]["hits"]:
                yield from page["hits"]["hits"]
                page = client.scroll(scroll_id=page["_scroll_id"], scroll="1m")
        finally:
            client.clear_scroll(scroll_id=page["_scroll_id"], ignore=(404,))

    def bodies(self) -> list[bytes]:
        try:
            return [h["_source"]["@message"].encode() for h in self._hits(["@message"])]
        except Exception:             # the index does not exist yet, or the server is paused
            return []

    def count(self) -> int:
        client = self.server.client()
        if not client.indices.exists(index=self.index):
            return 0
        client.indices.refresh(index=self.index)
        return client.count(index=self.index)["count"]

    def notes(self) -> list[str]:
        rewrites = sum(h["_version"] - 1 for h in self._hits([]))
        return [f"{rewrites} documents were written again and overwritten (_version > 1)"]

    def outage(self, seconds: float) -> None:
        self.server.pause()
        try:
            time.sleep(seconds)
        finally:
            self.server.resume()


class MongoProbe(StoreProbe):
    kind = "mongodb"
    batch_key = "batch"
    outage_note = "secantusd killed with SIGKILL, restarted on its data directory"

    def start(self) -> "MongoProbe":
        self.server = SecantusServer(self.directory / "secantus").start()
        return self

    def sink_properties(self) -> dict[str, str]:
        return {"host": "127.0.0.1", "port": str(self.server.port), "db": "chaos", "collection": "events",
                "timeout": "2000"}

    def bodies(self) -> list[bytes]:
        try:
            client = self.server.client(timeout_ms=2000)
            try:
                return [d["log"].encode() for d in client.chaos.events.find({}, {"log": 1})]
            finally:
                client.close()
        except Exception:              # the server is down
            return []

    def count(self) -> int:
        client = self.server.client()
        try:
            return client.chaos.events.estimated_document_count()
        finally:
            client.close()

    def outage(self, seconds: float) -> None:
        self.server.stop(kill=True)
        time.sleep(seconds)
        self.server.start()


class HBaseProbe(StoreProbe):
    kind = "hbase"
    outage_note = "gateway stopped (SIGTERM, tables saved) and restarted"
    table = "chaos"

    def start(self) -> "HBaseProbe":
        self.server = HBaseGateway(self.directory / "hbase").start()
        connection = self.server.connection()
        connection.create_table(self.table, {"cf": {"max_versions": 10}})
        connection.close()
        return self

    def sink_properties(self) -> dict[str, str]:
        return {"table": self.table, "columnFamily": "cf", "thriftServer": f"127.0.0.1:{self.server.port}",
                "serializer.incrementColumn": "none", "timeout": "5000"}

    def _scan(self) -> list[tuple[bytes, dict]]:
        connection = self.server.connection()
        try:
            return list(connection.table(self.table).scan(batch_size=10000))
        finally:
            connection.close()

    def bodies(self) -> list[bytes]:
        try:
            return [cells[b"cf:pCol"] for _, cells in self._scan()]
        except Exception:             # the gateway is down
            return []

    def notes(self) -> list[str]:
        connection = self.server.connection()
        try:
            table = connection.table(self.table)
            rewrites = sum(len(table.cells(row, b"cf:pCol", versions=10)) - 1 for row, _ in self._scan())
        finally:
            connection.close()
        return [f"{rewrites} cells were written again (extra versions of the same row)"]

    def outage(self, seconds: float) -> None:
        self.server.stop()
        time.sleep(seconds)
        self.server.start()
