"""Every registered component of every kind, run through its kind's contract (core/component.py).

A new component added to core/registries.py is picked up here without a line of test: it must subclass its
kind's base, declare its settings as a frozen ``Config`` dataclass of ``opt`` fields, build in one step from
validated properties, and honour the kind's lifecycle.  Required properties get sample values from SAMPLES.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import MISSING

import pytest

from core.component import Component
from core.config import build_config
from core.event import Batch, Event
from core.registries import ALL
from routing.channels import Channel, ChannelContext
from routing.selectors import Selector, SelectorContext
from workers.interceptors.base import Interceptor, InterceptorContext
from workers.processors.base import ProcessorContext, SinkProcessor
from workers.sinks.base import Sink, SinkContext
from workers.sources.base import Source, SourceContext

BASES = {"source": Source, "sink": Sink, "channel": Channel, "selector": Selector, "interceptor": Interceptor,
         "processor": SinkProcessor}
CHANNELS = ("c1", "c2")
SINKS = {"default": ("k1",), "failover": ("k1", "k2"), "load_balance": ("k1", "k2")}

# Sample values for required properties ({tmp} is a fresh directory per test).
SAMPLES = {
    ("source", "netcat"): {"bind": "127.0.0.1", "port": "0"},
    ("source", "exec"): {"command": "echo compliance"},
    ("source", "http"): {"bind": "127.0.0.1", "port": "0"},
    ("source", "TAILDIR"): {"filegroups": "f1", "filegroups.f1": "{tmp}/.*\\.log",
                            "positionFile": "{tmp}/position.json"},
    ("source", "spooldir"): {"spoolDir": "{tmp}"},
    ("source", "seq"): {"totalEvents": "5"},
    ("source", "syslogtcp"): {"host": "127.0.0.1", "port": "0"},
    ("source", "multiport_syslogtcp"): {"host": "127.0.0.1", "ports": "0 0"},
    ("source", "syslogudp"): {"host": "127.0.0.1", "port": "0"},
    ("source", "netcatudp"): {"bind": "127.0.0.1", "port": "0"},
    ("source", "avro"): {"bind": "127.0.0.1", "port": "0"},
    ("source", "thrift"): {"bind": "127.0.0.1", "port": "0"},
    ("sink", "file_roll"): {"sink.directory": "{tmp}"},
    # A write is confirmed by the next hop: the next_hop fixture's avro and thrift sources, in-process.
    ("sink", "avro"): {"hostname": "127.0.0.1", "port": "{avro_port}", "request-timeout": "5000"},
    ("sink", "thrift"): {"hostname": "127.0.0.1", "port": "{thrift_port}", "request-timeout": "5000"},
    ("sink", "hdfs"): {"hdfs.path": "file://{tmp}/hdfs/%{h}"},
    # Store sinks point at a port where nothing listens (see test_sink_writes_a_batch).
    ("sink", "elasticsearch"): {"hostNames": "127.0.0.1:1"},
    ("sink", "mongodb"): {"host": "127.0.0.1", "port": "1", "timeout": "300"},
    **{("sink", hbase): {"table": "t", "columnFamily": "cf", "thriftServer": "127.0.0.1:1"}
       for hbase in ("hbase", "hbase2", "asynchbase")},
    ("interceptor", "regex_extractor"): {"regex": "(\\d+)", "serializers": "s1", "serializers.s1.name": "n"},
    ("interceptor", "search_replace"): {"searchPattern": "x"},
}

# Sinks of network stores: their compliance run needs no server.  They start without one (a store that is down
# must not keep a sink from starting) and a write to a store that is down raises, so the batch is retried; their
# writes to a real server are tested in their own test modules, against the stand-in servers.
STORE_SINKS = {"elasticsearch", "mongodb", "hbase", "hbase2", "asynchbase"}

COMPONENTS = [(kind, alias) for kind, registry in ALL.items() for alias in registry.types]


class Recorder:
    """A channel processor and counters in one: records what a source delivers."""

    def __init__(self):
        self.batches: list[Batch] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def process(self, batch: Batch, message_events: int = 0) -> None:
        with self.lock:
            self.batches.append(batch)

    def process_many(self, batches: list[Batch]) -> list[None]:
        for batch in batches:
            self.process(batch)
        return [None] * len(batches)

    def put_limits(self) -> tuple[int, int]:
        return 100, 0

    def add(self, counter: str, n: int = 1) -> None:
        with self.lock:
            self.counts[counter] = self.counts.get(counter, 0) + n

    def started(self) -> None:
        self.add("started")

    def stopped(self) -> None:
        self.add("stopped")


class RecordingSink:
    def __init__(self, name: str):
        self.name, self.batch_size, self.written = name, 10, []

    def write(self, batch) -> None:
        self.written.append(batch)


def build(kind: str, alias: str, tmp_path, refs: tuple[str, ...] = (), values: dict | None = None):
    cls = ALL[kind].resolve(alias)
    values = {"tmp": str(tmp_path), **(values or {})}
    props = dict(SAMPLES.get((kind, alias), {}))
    for name, value in values.items():
        props = {k: v.replace("{" + name + "}", value) for k, v in props.items()}
    config, errors, _notices = build_config(cls, props, f"a1.{kind}s.x.", refs)
    assert errors == [], errors
    return cls, config


@pytest.mark.parametrize("kind,alias", COMPONENTS, ids=[f"{k}-{a}" for k, a in COMPONENTS])
def test_shape(kind, alias):
    """One base per kind, a frozen Config of opt() fields with docs, and the one check hook."""
    cls = ALL[kind].resolve(alias)
    assert issubclass(cls, BASES[kind]) and issubclass(cls, Component)
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    for field in dataclasses.fields(cls.Config):
        assert "key" in field.metadata, f"{cls.__name__}.Config.{field.name} is not declared with opt()"
        assert field.metadata.get("doc") or field.metadata.get("inert"), \
            f"{cls.__name__}.Config.{field.name} has neither a doc line nor an inert reason"
    assert callable(cls.check)
    for hook in ("check_channels", "check_sinks"):
        assert not hasattr(cls, hook), f"{cls.__name__}.{hook}: validation has one hook, check(config, refs)"


@pytest.mark.parametrize("kind,alias", COMPONENTS, ids=[f"{k}-{a}" for k, a in COMPONENTS])
def test_required_properties_are_reported_with_full_keys(kind, alias):
    cls = ALL[kind].resolve(alias)
    required = [f.metadata["key"] for f in dataclasses.fields(cls.Config)
                if f.default is MISSING and f.default_factory is MISSING]
    refs = SINKS.get(alias, ()) if kind == "processor" else CHANNELS
    _config, errors, _ = build_config(cls, {}, f"a1.{kind}s.x.", refs)
    assert sorted(e.key for e in errors) == sorted(f"a1.{kind}s.x.{k}" for k in required)


@pytest.mark.parametrize("alias", list(ALL["source"].types))
def test_source_lifecycle(alias, tmp_path):
    """open in start, serve in its own thread, close and every thread ended on stop; start/stop not
    overridden."""
    cls, config = build("source", alias, tmp_path)
    assert cls.start is Source.start and cls.stop is Source.stop, "sources implement open/serve/close"
    recorder = Recorder()
    source = cls("r1", config, SourceContext("a1", recorder, recorder, tmp_path))
    source.start()
    try:
        assert recorder.counts.get("started") == 1
    finally:
        source.stop(timeout_s=10)
    assert recorder.counts.get("stopped") == 1
    alive = [t.name for t in source._threads if t.is_alive()]
    assert alive == [], f"threads still running after stop: {alive}"
    for batch in recorder.batches:
        assert isinstance(batch, Batch)


@pytest.fixture(scope="module")
def next_hop():
    """For sinks whose write only returns once a next hop confirmed it (avro, thrift): Flumery's avro and thrift
    sources, in-process, recording; their ports are the ``{avro_port}`` and ``{thrift_port}`` of SAMPLES."""
    sources = {}
    for kind in ("avro", "thrift"):
        cls = ALL["source"].resolve(kind)
        recorder = Recorder()
        sources[kind] = cls("next", cls.Config(bind="127.0.0.1", port=0), SourceContext("a2", recorder, recorder))
        sources[kind].start()
    yield {f"{kind}_port": str(source.port) for kind, source in sources.items()}
    for source in sources.values():
        source.stop()


@pytest.mark.parametrize("alias", list(ALL["sink"].types))
def test_sink_writes_a_batch(alias, tmp_path, next_hop):
    cls, config = build("sink", alias, tmp_path, values=next_hop)
    assert cls.write is not Sink.write
    sink = cls("k1", config, SinkContext("a1", tmp_path))
    sink.start()
    batch = Batch([b"one", b"two"], [{"h": "1"}, {}], ["id-1", "id-2"])
    try:
        if alias in STORE_SINKS:
            with pytest.raises(Exception):
                sink.write(batch)
        else:
            sink.write(batch)
    finally:
        sink.stop()
    assert sink.batch_size > 0


@pytest.mark.parametrize("alias", list(ALL["interceptor"].types))
def test_interceptor_keeps_events_immutable(alias, tmp_path):
    cls, config = build("interceptor", alias, tmp_path)
    interceptor = cls("i1", config, InterceptorContext("a1", "r1"))
    events = [Event(b"a 1 x", {"h": "v"}, "id-1"), Event(b"b 2 y", id="id-2")]
    before = [dict(e.headers) for e in events]
    out = interceptor.intercept_batch(list(events))
    assert all(isinstance(e, Event) for e in out)
    assert {e.id for e in out} <= {"id-1", "id-2"}, "interceptors keep event ids"
    assert [dict(e.headers) for e in events] == before, "an interceptor changed an event in place"


@pytest.mark.parametrize("alias", list(ALL["selector"].types))
def test_selector_picks_among_its_channels(alias, tmp_path):
    cls, config = build("selector", alias, tmp_path, CHANNELS)
    selector = cls("selector", config, SelectorContext(CHANNELS))
    required, optional = selector.select({})
    assert set(required) | set(optional) <= set(CHANNELS)
    assert isinstance(selector.uniform, bool)


@pytest.mark.parametrize("alias", list(ALL["processor"].types))
def test_processor_writes_through_one_sink(alias, tmp_path):
    names = SINKS[alias]
    cls, config = build("processor", alias, tmp_path, names)
    sinks = [RecordingSink(n) for n in names]
    processor = cls("g1", config, ProcessorContext(sinks))
    used = processor.write(Batch([b"x"]))
    assert used in sinks and len(used.written) == 1
    assert sum(len(s.written) for s in sinks) == 1


@pytest.mark.parametrize("alias", list(ALL["channel"].types))
def test_channel_names_its_queue_and_limits(alias, tmp_path):
    cls, config = build("channel", alias, tmp_path)
    channel = cls("c1", config, ChannelContext("a1"))
    assert channel.queue == "flumery.a1.c1"
    assert 0 < channel.transaction_capacity <= channel.capacity
    assert isinstance(cls.durable, bool)


@pytest.mark.parametrize("kind", list(ALL))
def test_flume_class_names_are_aliases_of_registered_types(kind):
    registry = ALL[kind]
    for flume_class, alias in registry.flume_classes.items():
        assert alias in registry.types, f"{flume_class} -> {alias}, which is not registered"
        assert registry.resolve(flume_class) is registry.resolve(alias)
