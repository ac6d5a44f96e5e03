"""The hdfs sink against a real Hadoop 2.7.3 NameNode + DataNode (tests/hadoop.py, started once per session).

Files are read back with Hadoop's own code (``hdfs dfs -text``, i.e. ``FsShell -text`` on the same jars) for
SequenceFiles and compressed streams, and with fastavro's reader for ``avro_event``.  Set FLUMERY_SKIP_HADOOP=1 to
skip these tests on purpose; without it, a machine that cannot run Hadoop fails them.
"""
from __future__ import annotations

import bz2
import http.client
import io
import os
import shutil
import uuid

import fastavro
import pytest
from agents import AgentProcess, wait_until
from conftest import EXAMPLES

from core.config import build_config
from core.event import Batch
from core.registries import SINKS
from workers.sinks.base import SinkContext

pytest_plugins = ("hadoop",)
HdfsSink = SINKS.resolve("hdfs")
TS = "1340459193234"


@pytest.fixture
def root(hadoop) -> str:
    """A fresh HDFS directory for one test."""
    return f"/t-{uuid.uuid4().hex[:8]}"


def make(hadoop, tmp_path, root, **props):
    base = {"hdfs.path": f"{hadoop.webhdfs_uri}{root}", "hdfs.rollCount": "0", "hdfs.rollSize": "0",
            "hdfs.timeZone": "UTC"}
    config, errors, _ = build_config(HdfsSink, {**base, **props}, "a1.sinks.k1.")
    assert errors == [], errors
    sink = HdfsSink("k1", config, SinkContext("a1", tmp_path / "data"))
    sink.start()
    return sink


def batches(n: int, size: int, headers: dict | None = None, first: int = 0) -> list[Batch]:
    out = []
    for b in range(first, first + n):
        bodies = [f"line {b}.{i}".encode() for i in range(size)]
        out.append(Batch(bodies, [dict(headers or {"timestamp": TS, "host": "web1"}) for _ in bodies],
                         [f"{b}-{i}" for i in range(size)]))
    return out


def write_all(sink, items) -> None:
    try:
        for item in items:
            sink.write(item)
    finally:
        sink.stop()


def lines(n: int, size: int, first: int = 0) -> list[bytes]:
    return [f"line {b}.{i}".encode() for b in range(first, first + n) for i in range(size)]


def test_datastream_through_webhdfs_rolls_and_renames(hadoop, tmp_path, root):
    sink = make(hadoop, tmp_path, root, **{"hdfs.fileType": "DataStream", "hdfs.rollCount": "5",
                                           "hdfs.filePrefix": "events-%{host}"})
    write_all(sink, batches(3, 4))
    files = hadoop.list_files(root)
    assert len(files) == 3 and not any(f.endswith(".tmp") for f in files)
    assert all(os.path.basename(f).startswith("events-web1.") for f in files)
    content = b"".join(hadoop.read(f) for f in files)
    assert content.split(b"\n")[:-1] == lines(3, 4)
    assert [len(hadoop.read(f).split(b"\n")) - 1 for f in files] == [5, 5, 2]


@pytest.mark.parametrize("write_format,value", [("Writable", lambda b: b.hex(" ").encode()),
                                                ("Text", lambda b: b)])
def test_sequencefile_read_back_by_hadoop(hadoop, tmp_path, root, write_format, value):
    sink = make(hadoop, tmp_path, root, **{"hdfs.fileType": "SequenceFile", "hdfs.writeFormat": write_format})
    write_all(sink, batches(3, 500))                 # > 2000 bytes per append: sync escapes inside appends too
    [path] = hadoop.list_files(root)
    records = hadoop.text(path).split(b"\n")[:-1]
    assert records == [TS.encode() + b"\t" + value(line) for line in lines(3, 500)]


def test_gzip_stream_read_back_by_hadoop(hadoop, tmp_path, root):
    sink = make(hadoop, tmp_path, root, **{"hdfs.fileType": "CompressedStream", "hdfs.codeC": "gzip"})
    write_all(sink, batches(3, 50))
    [path] = hadoop.list_files(root)
    assert path.endswith(".gz")
    assert hadoop.text(path).split(b"\n")[:-1] == lines(3, 50)


def test_bzip2_stream(hadoop, tmp_path, root):
    """One append is one bzip2 stream, as Flume's HDFSCompressedDataStream finishes its codec at every flush.
    Hadoop 2.7.3's ``-text`` reads a file of one stream, but stops with "bad block header" at the second stream of
    a file (it does so on the output of Hadoop's own BZip2Codec after finish() + resetState(), i.e. on Flume's
    files too), so a file of several appends is checked with Python's multi-stream reader."""
    sink = make(hadoop, tmp_path, root, **{"hdfs.fileType": "CompressedStream", "hdfs.codeC": "BZip2Codec",
                                           "hdfs.rollCount": "50"})
    write_all(sink, batches(1, 50) + batches(3, 20, first=1))
    files = hadoop.list_files(root)
    assert all(f.endswith(".bz2") for f in files)
    assert hadoop.text(files[0]).split(b"\n")[:-1] == lines(1, 50)
    assert hadoop.read(files[1]).count(b"BZh") >= 3                   # 20 + 20 + 10 events: three appends
    rest = b"".join(bz2.decompress(hadoop.read(f)) for f in files[1:])
    assert rest.split(b"\n")[:-1] == lines(3, 20, first=1)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_avro_event_read_by_avro(hadoop, tmp_path, root, codec):
    sink = make(hadoop, tmp_path, root, **{"hdfs.fileType": "DataStream", "serializer": "avro_event",
                                           "serializer.compressionCodec": codec, "hdfs.fileSuffix": ".avro"})
    write_all(sink, batches(3, 10))
    [path] = hadoop.list_files(root)
    reader = fastavro.reader(io.BytesIO(hadoop.read(path)))
    assert reader.writer_schema["name"] == "Event"
    records = list(reader)
    assert [r["body"] for r in records] == lines(3, 10)
    assert records[0]["headers"] == {"timestamp": TS, "host": "web1"}


def test_hdfs_uri_with_the_gateway_found_in_hadoop_conf_dir(hadoop, tmp_path, root, monkeypatch):
    """``hdfs://namenode:rpc-port/...`` as Flume users write it; the WebHDFS address comes from
    $HADOOP_CONF_DIR/hdfs-site.xml, and a path without a scheme goes to fs.defaultFS of core-site.xml."""
    monkeypatch.setenv("HADOOP_CONF_DIR", str(hadoop.conf_dir))
    sink = make(hadoop, tmp_path, root, **{"hdfs.path": f"{hadoop.fs_uri}{root}/a", "hdfs.fileType": "DataStream"})
    write_all(sink, batches(1, 3))
    sink = make(hadoop, tmp_path, root, **{"hdfs.path": f"{root}/b/%Y", "hdfs.fileType": "DataStream"})
    write_all(sink, batches(1, 2))
    files = hadoop.list_files(root)
    assert [f.rsplit("/", 1)[0] for f in files] == [f"{root}/a", f"{root}/b/2012"]
    assert hadoop.read(files[1]) == b"line 0.0\nline 0.1\n"


def test_hdfs_uri_with_the_gateway_set_by_property(hadoop, tmp_path, root):
    sink = make(hadoop, tmp_path, root, **{"hdfs.path": f"{hadoop.fs_uri}{root}", "hdfs.fileType": "DataStream",
                                           "hdfs.webHdfsAddress": hadoop.http_address})
    write_all(sink, [Batch([b"no time", b"timed"], [{}, {"timestamp": TS}], ["x1", "x2"])])   # no time needed
    assert hadoop.read(hadoop.list_files(root)[0]) == b"no time\ntimed\n"


def test_crash_recovery_truncates_on_hdfs_and_writes_nothing_twice(hadoop, tmp_path, root):
    """A process dies in the middle of an append: the next one cuts the torn bytes off with WebHDFS TRUNCATE,
    renames the file, and skips the events of the batch that were at rest before it."""
    first = make(hadoop, tmp_path, root, **{"hdfs.fileType": "DataStream"})
    [one, two] = batches(2, 3)
    first.write(one)
    f = next(iter(first.writers.values())).file
    first.journal.writing(f.tmp_uri, f.length, f.length + 100, list(two.ids))
    f.fs.append(f.path, b"line 1.0\nli")                       # killed half way through the append
    first.stopping.set()
    first.roller.join(5)
    os.close(first.journal.fd)
    os.close(first.journal.lock_fd)
    second = make(hadoop, tmp_path, root, **{"hdfs.fileType": "DataStream"})
    [recovered] = hadoop.list_files(root)
    assert not recovered.endswith(".tmp")
    # TRUNCATE in the middle of a block finishes by block recovery, a moment after it answered; meanwhile a read
    # may be cut short (the NameNode gives the old length, the DataNode sends the new one): read again.
    wait_until(lambda: _reads(hadoop, recovered) == b"line 0.0\nline 0.1\nline 0.2\n", 60, what="the truncate")
    combined = batches(2, 3)
    combined[0].extend(combined[1])
    wait_until(lambda: _appendable(second, combined[0]), 60, what="HDFS to finish the truncate's block recovery")
    second.stop()
    content = b"".join(hadoop.read(p) for p in hadoop.list_files(root))
    assert sorted(content.split(b"\n")[:-1]) == lines(2, 3)


def _reads(hadoop, path: str) -> bytes | None:
    """The file's bytes, or None if the read was cut short."""
    try:
        return hadoop.read(path)
    except http.client.IncompleteRead:
        return None


def _appendable(sink, batch) -> bool:
    try:
        sink.write(batch)
        return True
    except OSError:
        return False


def test_flume_example_spooldir_to_hdfs(hadoop, tmp_path, root):
    """The User Guide's f-spooldir-hdfs.conf, unchanged but for the NameNode address (and the spool directory,
    which must exist here), through a real agent: spooldir -> timestamp interceptor -> file channel -> hdfs."""
    spool = tmp_path / "spool"
    spool.mkdir()
    text = (EXAMPLES / "f-spooldir-hdfs.conf").read_text()
    text = text.replace("/var/log/apache/flumeSpool", str(spool))
    text = text.replace("hdfs.path = /flume/events/", f"hdfs.path = {hadoop.fs_uri}{root}/flume/events/")
    staged = tmp_path / "staged.log"
    staged.write_text("".join(f"apache line {i}\n" for i in range(250)))
    shutil.move(staged, spool / "access.log")
    with AgentProcess(tmp_path, text, env={"HADOOP_CONF_DIR": str(hadoop.conf_dir)}):
        wait_until(lambda: (spool / "access.log.COMPLETED").exists(), 60, what="the spooled file")
        # Flume's default rolling (10 events a file): 25 files; the last one is closed by the clean stop.
        wait_until(lambda: len(hadoop.list_files(root)) >= 25, 120, what="25 files in HDFS")
    files = hadoop.list_files(root)
    assert not any(f.endswith(".tmp") for f in files), files
    assert all(os.path.basename(f).startswith("events-.") for f in files)
    assert all(f.split("/")[-2] == "00" for f in files)                # %S of a time rounded to 10 minutes
    records = hadoop.text(f"{root}/flume/events/*/*/*/events-.*").split(b"\n")[:-1]
    bodies = [bytes.fromhex(record.split(b"\t", 1)[1].decode()) for record in records]
    assert sorted(bodies) == sorted(f"apache line {i}".encode() for i in range(250))
