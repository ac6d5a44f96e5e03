"""The hdfs sink on ``file://`` paths (no server needed): Flume's HDFSSink vectors (config validation, bucket
writer, process), naming, rolling, LRU, close retries, dead letters, and the journal that keeps a redelivered
batch from being written twice and finishes in-use files a dead process left behind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from agents import wait_until
from conftest import VECTORS

from core.config import build_config, parse_agent
from core.errors import ConfigInvalid, RejectedEvents
from core.event import Batch
from core.registries import SINKS
from workers.sinks.base import SinkContext
from workers.sinks.hdfs.filesystems import FileSystems, LocalFileSystem
from workers.sinks.hdfs.formats import FileFormat
from workers.sinks.hdfs.writer import BucketWriter, Naming
from workers.sinks.journal import Journal

GROUPS = json.loads(VECTORS.read_text())
HdfsSink = SINKS.resolve("hdfs")
TS = "1340459193234"             # 2012-06-23 13:46:33 UTC


def make(tmp: Path, **props):
    base = {"hdfs.path": f"file://{tmp}/out", "hdfs.fileType": "DataStream", "hdfs.timeZone": "UTC"}
    config, errors, notices = build_config(HdfsSink, {**base, **props}, "a1.sinks.k1.")
    assert errors == [], errors
    return HdfsSink("k1", config, SinkContext("a1", tmp / "data"))


def batch(bodies, headers=None, ids=None):
    bodies = [b if isinstance(b, bytes) else b.encode() for b in bodies]
    headers = headers if headers is not None else [{"timestamp": TS}] * len(bodies)
    ids = ids if ids is not None else [f"id-{b.decode()}" for b in bodies]
    return Batch(bodies, headers, ids)


def files(tmp: Path, sub: str = "out") -> dict[str, bytes]:
    root = tmp / sub
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def crash(sink) -> None:
    """What kill -9 leaves: no close, no rename; the journal's lock is let go (the kernel does that)."""
    sink.stopping.set()
    sink.roller.join(5)
    os.close(sink.journal.fd)
    os.close(sink.journal.lock_fd)


# --- Flume's vectors ------------------------------------------------------------------------------------------------

def _config_case(case):
    return build_config(HdfsSink, {"hdfs.path": "file:///tmp/x", **case["config"]}, "a1.sinks.k1.")


@pytest.mark.parametrize("case", GROUPS["HDFSSink_config_validation"],
                         ids=[json.dumps(c["config"]) for c in GROUPS["HDFSSink_config_validation"]])
def test_config_validation_vectors(case, tmp_path):
    config, errors, _ = _config_case(case)
    expected = case["expected"]
    if "error" in expected:
        assert config is None and len(errors) == 1
        error = errors[0]
        assert error.key.startswith("a1.sinks.k1.hdfs.")
        if "roundValue" in expected["error"]:
            assert error.key == "a1.sinks.k1.hdfs.roundValue"
            limit = expected["error"].split("<= ")[1].split(" ")[0]
            assert f"<= {limit}" in error.message and case["config"]["hdfs.roundValue"] in error.message
        else:
            assert error.key == "a1.sinks.k1.hdfs.codeC" and "CompressedStream" in error.message
        return
    assert errors == []
    sink = HdfsSink("k1", config, SinkContext("a1", tmp_path))
    sink.start()
    try:
        if "tryCount" in expected:
            tries = 1 if expected["tryCount"] == 1 else 0          # 0: until the close works (Integer.MAX_VALUE)
            assert sink.close_tries == tries
        if "inUseSuffix" in expected:
            assert sink.naming.in_use_suffix == expected["inUseSuffix"]
    finally:
        sink.stop()


def writer(tmp: Path, clock_ms=lambda: 1000, fmt=None, naming=None, roll_count=0, roll_size=0,
           journal=None) -> BucketWriter:
    journal = journal or Journal(tmp / "journal")
    if journal.fd is None:
        journal.open()
    return BucketWriter(f"file://{tmp}/b", "file", FileSystems(None, 30, None), fmt or FileFormat("DataStream"),
                        naming or Naming(), journal, roll_count, roll_size, clock_ms=clock_ms)


@pytest.mark.parametrize("roll_count,roll_size", [(100, 0), (0, 300)], ids=["testEventCountingRoller",
                                                                           "testSizeRoller"])
def test_bucketwriter_rollers(tmp_path, roll_count, roll_size):
    w = writer(tmp_path, roll_count=roll_count, roll_size=roll_size)
    for _ in range(10):
        w.write(list(batch(["foo"] * 100, ids=[""] * 100)))
    w.close()
    written = files(tmp_path, "b")
    assert len(written) == 10
    assert all(len(data) == 400 for data in written.values())      # 100 x "foo\n": 3000 body bytes in all


def test_bucketwriter_naming_vectors(tmp_path):
    w = writer(tmp_path, clock_ms=lambda: 1234)
    w.write(list(batch(["x"])))
    assert w.file.path.endswith("file.1235.tmp")                     # testFileSuffixNotGiven: T+1
    w.close()
    w = writer(tmp_path, clock_ms=lambda: 1234, naming=Naming(suffix=".avro"))
    w.write(list(batch(["x"])))
    assert w.file.path.endswith("1235.avro.tmp")                     # testFileSuffixGiven
    w = writer(tmp_path, naming=Naming(in_use_prefix="BRNO_IS_CITY_IN_CZECH_REPUBLIC",
                                       in_use_suffix="WELCOME_TO_THE_HELLMOUNTH"))
    w.write(list(batch(["x"])))
    assert "BRNO_IS_CITY_IN_CZECH_REPUBLIC" in w.file.path and "WELCOME_TO_THE_HELLMOUNTH" in w.file.path
    name = w.file.path.rsplit("/", 1)[1]
    assert name == "BRNO_IS_CITY_IN_CZECH_REPUBLIC" + w.file.final_path.rsplit("/", 1)[1] + "WELCOME_TO_THE_HELLMOUNTH"


def test_codec_extension_unless_a_suffix_is_given(tmp_path):
    w = writer(tmp_path, fmt=FileFormat("CompressedStream", codec="gzip"))
    w.write(list(batch(["x"])))
    assert w.file.final_path.endswith(".1001.gz")


def test_process_vector_per_hour_buckets(tmp_path):
    """testAppend: hdfs.path=<dir>/%Y-%m-%d/%H, rollCount=3, batchSize=2; 3 transactions of 2 events."""
    sink = make(tmp_path, **{"hdfs.path": f"file://{tmp_path}/out/%Y-%m-%d/%H", "hdfs.rollCount": "3",
                             "hdfs.batchSize": "2"})
    sink.start()
    hours = {1: 1296550800000, 2: 1299229200000, 3: 1301911200000}   # 2011-02-01 09:00, 03-04 09:00, 04-04 10:00
    for i in (1, 2, 3):
        sink.write(batch([f"Test.{i}.{j}" for j in (1, 2)], [{"timestamp": str(hours[i])}] * 2))
    sink.stop()
    out = files(tmp_path)
    assert sorted(p.rsplit("/", 1)[0] for p in out) == ["2011-02-01/09", "2011-03-04/09", "2011-04-04/10"]
    assert sorted(out.values()) == [f"Test.{i}.1\nTest.{i}.2\n".encode() for i in (1, 2, 3)]


def test_process_vector_close_on_idle(tmp_path):
    """testCloseOnIdle: no rolling but idleTimeout; the idle file is closed, a busy one is not."""
    sink = make(tmp_path, **{"hdfs.rollCount": "0", "hdfs.rollSize": "0", "hdfs.rollInterval": "0",
                             "hdfs.batchSize": "2", "hdfs.idleTimeout": "1"})
    sink.start()
    try:
        sink.write(batch(["a", "b"]))
        sink.write(batch(["c", "d"]))
        wait_until(lambda: any(not p.endswith(".tmp") for p in files(tmp_path)), 10, what="the idle close")
        sink.write(batch(["e", "f"]))
        sink.write(batch(["g", "h"]))
        assert sum(p.endswith(".tmp") for p in files(tmp_path)) == 1
    finally:
        sink.stop()
    out = files(tmp_path)
    assert len(out) == 2 and not any(p.endswith(".tmp") for p in out)
    assert sorted(out.values()) == [b"a\nb\nc\nd\n", b"e\nf\ng\nh\n"]


def test_process_vector_close_removes_the_bucket_writer(tmp_path):
    """testCloseRemovesFromSFWriters: the bucket key is <hdfs.path>/FlumeData, gone once rollInterval closed it."""
    sink = make(tmp_path, **{"hdfs.rollCount": "0", "hdfs.rollSize": "0", "hdfs.rollInterval": "1"})
    sink.start()
    try:
        sink.write(batch(["a"]))
        assert list(sink.writers) == [f"file://{tmp_path}/out/FlumeData"]
        wait_until(lambda: not sink.writers, 10, what="the interval roll")
        assert not any(p.endswith(".tmp") for p in files(tmp_path))
    finally:
        sink.stop()


# --- Flumery's behaviour ----------------------------------------------------------------------------------------------

def test_events_without_a_usable_timestamp_are_dead_letters(tmp_path):
    sink = make(tmp_path, **{"hdfs.path": f"file://{tmp_path}/out/%Y"})
    sink.start()
    try:
        with pytest.raises(RejectedEvents) as info:
            sink.write(batch(["ok", "none", "bad"], [{"timestamp": TS}, {}, {"timestamp": "soon"}]))
    finally:
        sink.stop()
    assert sorted(info.value.reasons) == [1, 2]
    assert "no 'timestamp' header" in info.value.reasons[1]
    assert "not epoch milliseconds" in info.value.reasons[2]
    assert list(files(tmp_path).values()) == [b"ok\n"]


def test_max_open_files_closes_the_least_recently_written(tmp_path):
    sink = make(tmp_path, **{"hdfs.path": f"file://{tmp_path}/out/%{{k}}", "hdfs.maxOpenFiles": "2",
                             "hdfs.rollCount": "0"})
    sink.start()
    try:
        for key in ("a", "b", "a", "c"):
            sink.write(batch([key], [{"k": key}], [f"{key}-{len(sink.writers)}-{key}"]))
        assert [k.rsplit("/", 2)[1] for k in sink.writers] == ["a", "c"]
        assert [p for p in files(tmp_path) if not p.endswith(".tmp")] == [p for p in files(tmp_path)
                                                                        if p.startswith("b/")]
    finally:
        sink.stop()


def test_a_redelivered_batch_is_not_written_twice(tmp_path):
    sink = make(tmp_path, **{"hdfs.rollCount": "0"})
    sink.start()
    try:
        sink.write(batch(["a", "b"]))
        sink.write(batch(["a", "b", "c"]))          # a and b came back (no ack), gathered with c
    finally:
        sink.stop()
    assert list(files(tmp_path).values()) == [b"a\nb\nc\n"]


def test_kill_between_write_and_ack_leaves_no_duplicate_and_no_in_use_file(tmp_path):
    first = make(tmp_path, **{"hdfs.rollCount": "0"})
    first.start()
    first.write(batch(["a", "b"]))
    crash(first)
    assert [p.endswith(".tmp") for p in files(tmp_path)] == [True]
    second = make(tmp_path, **{"hdfs.rollCount": "0"})
    second.start()                                 # finishes the dead process's in-use file
    try:
        assert [p.endswith(".tmp") for p in files(tmp_path)] == [False]
        second.write(batch(["a", "b", "c"]))       # the unacknowledged batch comes back
    finally:
        second.stop()
    out = files(tmp_path)
    assert sorted(out.values()) == [b"a\nb\n", b"c\n"]
    assert not any(p.endswith(".tmp") for p in out)
    assert not list((tmp_path / "data" / "hdfs-journal" / "k1").iterdir()), "a clean stop leaves no journal"


def test_a_message_gathered_twice_into_one_batch_is_written_once(tmp_path):
    sink = make(tmp_path, **{"hdfs.rollCount": "0"})
    sink.start()
    try:
        sink.write(batch(["a", "b", "a", "b", "c"]))
    finally:
        sink.stop()
    assert list(files(tmp_path).values()) == [b"a\nb\nc\n"]


def test_a_torn_append_is_cut_off_when_the_file_is_recovered(tmp_path):
    first = make(tmp_path, **{"hdfs.rollCount": "0"})
    first.start()
    first.write(batch(["a"]))
    f = next(iter(first.writers.values())).file
    first.journal.writing(f.tmp_uri, f.length, f.length + 4, ["id-b", "id-c"])
    LocalFileSystem().append(f.path, b"b\nc")      # killed half way through the append
    crash(first)
    second = make(tmp_path, **{"hdfs.rollCount": "0"})
    second.start()
    try:
        second.write(batch(["b", "c"]))
    finally:
        second.stop()
    assert sorted(files(tmp_path).values()) == [b"a\n", b"b\nc\n"]


def test_a_failed_close_is_retried_then_the_next_start_finishes_it(tmp_path, caplog):
    sink = make(tmp_path, **{"hdfs.rollCount": "1", "hdfs.retryInterval": "1", "hdfs.closeTries": "2"})
    sink.start()
    calls = []
    original = LocalFileSystem.rename

    def failing(self, source, target):
        calls.append(source)
        raise OSError("the NameNode is away")

    LocalFileSystem.rename = failing
    try:
        sink.write(batch(["a", "b"]))              # rollCount 1: closing the first file fails
        wait_until(lambda: len(calls) >= 2, 10, what="the second close attempt")
        assert "closing" in caplog.text and "attempt 1" in caplog.text and "attempt 2" in caplog.text
    finally:
        LocalFileSystem.rename = original
        sink.stop()
    assert sum(p.endswith(".tmp") for p in files(tmp_path)) == 1    # given up after closeTries
    again = make(tmp_path)
    again.start()
    again.stop()
    assert sorted(files(tmp_path).values()) == [b"a\n", b"b\n"]
    assert not any(p.endswith(".tmp") for p in files(tmp_path))


def test_tiny_file_notice_for_flumes_defaults_only(tmp_path):
    conf = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = hdfs
a1.sinks.k1.channel = c1
a1.sinks.k1.hdfs.path = hdfs://namenode:8020/flume/%Y
"""
    notices = parse_agent(conf, "a1").notices
    assert any(n.startswith("a1.sinks.k1.hdfs.rollCount = 10: ") and "tiny files" in n for n in notices)
    assert any(n.startswith("a1.sinks.k1.hdfs.rollSize = 1024: ") for n in notices)
    large = conf + "a1.sinks.k1.hdfs.rollCount = 0\na1.sinks.k1.hdfs.rollSize = 134217728\n"
    assert not any("tiny" in n for n in parse_agent(large, "a1").notices)


@pytest.mark.parametrize("props,key,fragment", [
    ({"hdfs.fileType": "DataStream", "hdfs.codeC": "gzip"}, "hdfs.codeC", "no compressed output"),
    ({"hdfs.fileType": "CompressedStream", "hdfs.codeC": "snappy"}, "hdfs.codeC", "gzip and bzip2 only"),
    ({"hdfs.fileType": "CompressedStream", "hdfs.codeC": "zip"}, "hdfs.codeC", "unknown codec"),
    ({"hdfs.fileType": "Parquet"}, "hdfs.fileType", "must be one of"),
    ({"hdfs.path": "s3a://bucket/x"}, "hdfs.path", "unsupported scheme"),
    ({"hdfs.path": "/x/%[nope]"}, "hdfs.path", "%[localhost]"),
    ({"hdfs.timeZone": "Mars/Olympus"}, "hdfs.timeZone", "unknown time zone"),
    ({"hdfs.kerberosPrincipal": "flume/_HOST@X"}, "hdfs.kerberosPrincipal", "not supported"),
    ({"serializer": "org.apache.flume.sink.hdfs.AvroEventSerializer$Builder"}, "serializer", "not supported"),
    ({"hdfs.round": "true", "hdfs.roundUnit": "day"}, "hdfs.roundUnit", "must be one of"),
])
def test_bad_settings_name_the_key_and_value(props, key, fragment):
    conf = ("a1.channels = c1\na1.sinks = k1\na1.channels.c1.type = memory\na1.sinks.k1.type = hdfs\n"
            "a1.sinks.k1.channel = c1\n" + "".join(f"a1.sinks.k1.{k} = {v}\n" for k, v in
                                                    {"hdfs.path": "/x", **props}.items()))
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(conf, "a1")
    [error] = info.value.errors
    assert error.key == f"a1.sinks.k1.{key}" and fragment in error.message
    assert props.get(key, "") in error.message
