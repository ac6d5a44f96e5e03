"""app/config.py: Flume agent files parsed, validated, and every error reported at once."""
from __future__ import annotations

import textwrap

import pytest

from core.config import AgentConfig, load_agent, parse_agent
from core.errors import ConfigInvalid
from core.event import Event
from routing.channels import FileChannel, MemoryChannel
from routing.selectors import MultiplexingSelector, ReplicatingSelector, SelectorContext
from workers.interceptors.base import InterceptorContext
from workers.processors.default import DefaultSinkProcessor
from workers.sinks.file_roll import FileRollSink
from workers.sinks.logger import LoggerSink
from workers.sinks.null import NullSink
from workers.sources.netcat import NetcatSource

NETCAT_LOGGER = """\
# example.conf: A single-node Flume configuration
a1.sources = r1
a1.sinks = k1
a1.channels = c1
a1.sources.r1.type = netcat
a1.sources.r1.bind = localhost
a1.sources.r1.port = 44444
a1.sinks.k1.type = logger
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.channels.c1.transactionCapacity = 100
a1.sources.r1.channels = c1
a1.sinks.k1.channel = c1
"""

# seq -> c1 -> null; small and valid, a base for single-mistake variations
SEQ_NULL = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def conf(text: str) -> str:
    return textwrap.dedent(text)


def parse(text: str, agent: str = "a1", environ: dict | None = None) -> AgentConfig:
    return parse_agent(conf(text), agent, "flume.conf", environ if environ is not None else {})


def invalid(text: str, agent: str = "a1", environ: dict | None = None) -> ConfigInvalid:
    with pytest.raises(ConfigInvalid) as info:
        parse(text, agent, environ)
    return info.value


def messages(exc: ConfigInvalid) -> list[str]:
    return [str(e) for e in exc.errors]


def error_for(exc: ConfigInvalid, key: str) -> str:
    """The message of the (single) error on ``key``."""
    found = errors_for(exc, key)
    assert len(found) == 1, f"several errors on {key}: {found}"
    return found[0]


def errors_for(exc: ConfigInvalid, key: str) -> list[str]:
    """The messages of every error on ``key`` (at least one)."""
    found = [e.message for e in exc.errors if e.key == key]
    assert found, f"no error on {key}; errors: {messages(exc)}"
    return found


def with_lines(base: str, *extra: str) -> str:
    return base + "".join(line + "\n" for line in extra)


def without(base: str, prefix: str) -> str:
    return "".join(l + "\n" for l in base.splitlines() if not l.startswith(prefix))


# --- a valid agent ---------------------------------------------------------------------------------------------

def test_netcat_memory_logger_agent():
    config = parse(NETCAT_LOGGER)
    assert config.name == "a1"
    assert config.file == "flume.conf"
    assert list(config.sources) == ["r1"] and list(config.channels) == ["c1"] and list(config.sinks) == ["k1"]

    source = config.sources["r1"]
    assert source.key == "a1.sources.r1"
    assert source.type == "netcat"
    assert source.cls is NetcatSource
    assert source.channels == ("c1",)
    assert source.config.bind == "localhost"
    assert source.config.port == 44444 and isinstance(source.config.port, int)
    assert source.config.max_line_length == 512            # Flume's default
    assert source.config.ack_every_event is True
    assert source.selector.cls is ReplicatingSelector       # the default selector
    assert source.interceptors == ()

    channel = config.channels["c1"]
    assert channel.cls is MemoryChannel
    assert channel.config.capacity == 1000
    assert channel.config.transaction_capacity == 100

    sink = config.sinks["k1"]
    assert sink.cls is LoggerSink
    assert sink.channel == "c1"
    assert sink.config.max_bytes_to_log == 16
    assert config.sinkgroups == {}
    assert config.sink_units() == [("k1", ("k1",))]
    assert config.channel_of_unit(("k1",)) == "c1"


def test_typed_values_of_every_kind():
    config = parse(with_lines(
        without(NETCAT_LOGGER, "a1.sinks.k1.type"),
        "a1.sources.r1.max-line-length = 80",
        "a1.sources.r1.ack-every-event = FALSE",
        "a1.sinks.k1.type = logger",
        "a1.sinks.k1.maxBytesToLog = 64",
    ))
    assert config.sources["r1"].config.max_line_length == 80
    assert config.sources["r1"].config.ack_every_event is False
    assert config.sinks["k1"].config.max_bytes_to_log == 64


def test_channel_defaults_follow_flume():
    config = parse(with_lines(SEQ_NULL, "a1.channels = c1 c2", "a1.channels.c2.type = file"))
    assert config.channels["c1"].config.capacity == 100
    assert config.channels["c1"].config.transaction_capacity == 100
    assert config.channels["c2"].cls is FileChannel
    assert config.channels["c2"].config.capacity == 1_000_000
    assert config.channels["c2"].config.transaction_capacity == 10_000



def test_byte_capacity_is_real_with_flumery_defaults():
    config = parse(with_lines(SEQ_NULL, "a1.channels = c1 c2", "a1.channels.c2.type = file"))
    assert config.channels["c1"].config.body_byte_limit() == 128 * 1024 * 1024 * 80 // 100
    assert config.channels["c2"].config.body_byte_limit() == 1024 * 1024 * 1024
    assert not any("byteCapacity" in n for n in config.notices)


def test_byte_capacity_and_buffer_percentage_as_flume_computes_them():
    config = parse(with_lines(SEQ_NULL, "a1.channels.c1.byteCapacity = 800000",
                              "a1.channels.c1.byteCapacityBufferPercentage = 25"))
    assert config.channels["c1"].config.body_byte_limit() == 600000
    assert not any("byteCapacity" in n for n in config.notices)           # no longer "accepted, no effect"


def test_byte_capacity_zero_means_no_byte_bound():
    config = parse(with_lines(SEQ_NULL, "a1.channels = c1 c2", "a1.channels.c1.byteCapacity = 0",
                              "a1.channels.c2.type = file", "a1.channels.c2.byteCapacity = 0"))
    assert config.channels["c1"].config.body_byte_limit() == 0
    assert config.channels["c2"].config.body_byte_limit() == 0


def test_bad_byte_capacities_are_errors():
    exc = invalid(with_lines(SEQ_NULL, "a1.channels.c1.byteCapacity = -1",
                             "a1.channels.c1.byteCapacityBufferPercentage = 100"))
    assert "must be 0 or more" in error_for(exc, "a1.channels.c1.byteCapacity")
    assert "must be from 0 to 99" in error_for(exc, "a1.channels.c1.byteCapacityBufferPercentage")
    exc = invalid(with_lines(SEQ_NULL, "a1.channels.c1.byteCapacity = 1g"))
    assert "expected a whole number" in error_for(exc, "a1.channels.c1.byteCapacity")

def test_unused_channel_is_a_notice():
    config = parse(with_lines(SEQ_NULL, "a1.channels = c1 c2", "a1.channels.c2.type = memory"))
    assert any("c2" in n and "not used" in n for n in config.notices)


def test_load_agent_reads_a_file(tmp_path):
    path = tmp_path / "flume.conf"
    path.write_text(NETCAT_LOGGER)
    config = load_agent(path, "a1", environ={})
    assert config.file == str(path)
    assert config.sources["r1"].config.port == 44444


def test_load_agent_missing_file(tmp_path):
    with pytest.raises(ConfigInvalid) as info:
        load_agent(tmp_path / "nope.conf", "a1")
    assert "cannot read configuration file" in str(info.value)
    assert "nope.conf" in str(info.value)


def test_load_agent_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes(NETCAT_LOGGER.encode() + b"a1.sources.r1.x = caf\xe9\n")
    with pytest.raises(ConfigInvalid) as info:
        load_agent(path, "a1")
    assert "not UTF-8" in str(info.value)


# --- several agents --------------------------------------------------------------------------------------------

TWO_AGENTS = NETCAT_LOGGER + """\
a2.sources = r9
a2.channels = c1
a2.sinks = k1
a2.sources.r9.type = hdfs_source_that_does_not_exist
a2.sources.r9.channels = c7
a2.sinks.k1.type = loger
a2.sinks.k1.channel = c1
a2.channels.c1.type = memory
a2.channels.c1.bogus =
"""


def test_only_the_named_agent_is_validated():
    config = parse(TWO_AGENTS, "a1")
    assert list(config.sources) == ["r1"]
    assert config.sources["r1"].type == "netcat"


def test_other_agent_errors_only_mention_that_agent():
    exc = invalid(TWO_AGENTS, "a2")
    assert exc.errors
    assert all(e.key.startswith("a2.") for e in exc.errors), messages(exc)
    assert "unknown channel 'c7'" in error_for(exc, "a2.sources.r9.channels")
    assert "did you mean 'logger'" in error_for(exc, "a2.sinks.k1.type")
    assert "unknown property" in error_for(exc, "a2.channels.c1.bogus")       # empty, and unknown above all


def test_unknown_agent_lists_agents():
    exc = invalid(TWO_AGENTS, "a3")
    assert len(exc.errors) == 1
    message = str(exc.errors[0])
    assert "no agent named 'a3'" in message
    assert "agents: a1, a2" in message
    assert "flume.conf" in message


def test_unknown_agent_did_you_mean():
    text = NETCAT_LOGGER.replace("a1.", "agent1.")
    exc = invalid(text, "agnet1")
    assert "no agent named 'agnet1'" in str(exc)
    assert "did you mean 'agent1'" in str(exc)


def test_empty_file_has_no_agents():
    exc = invalid("# nothing here\n", "a1")
    assert "no agent named 'a1'" in str(exc) and "agents: none" in str(exc)


# --- every error at once ---------------------------------------------------------------------------------------

FOUR_MISTAKES = """\
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = netcta
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.channels.c2.capacity = lots
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c9
a1.sinks.k2.type = null
a1.sinks.k2.channel = c2
a1.sinks.k2.batchsize = 10
"""


def test_all_errors_reported_at_once():
    exc = invalid(FOUR_MISTAKES)
    assert sorted(e.key for e in exc.errors) == [
        "a1.channels.c2.capacity",
        "a1.sinks.k1.channel",
        "a1.sinks.k2.batchsize",
        "a1.sources.r1.type",
    ], messages(exc)
    text = str(exc)
    # each message starts with the full key
    assert "a1.sinks.k1.channel: unknown channel 'c9' (known: c1, c2)" in text
    assert "a1.sources.r1.type: unknown source type 'netcta'; did you mean 'netcat'?" in text
    assert "a1.channels.c2.capacity: expected a whole number (got 'lots')" in text
    assert "a1.sinks.k2.batchsize: unknown property; did you mean 'batchSize'?" in text
    for line in text.splitlines():
        assert line.startswith("a1."), line


def test_errors_are_sorted_by_key_and_deduplicated():
    exc = invalid(FOUR_MISTAKES)
    keys = [e.key for e in exc.errors]
    assert keys == sorted(keys)
    assert len(set(exc.errors)) == len(exc.errors)


def test_many_unrelated_errors_all_reported():
    text = """\
    a1.sources = r1 r2
    a1.channels = c1
    a1.sinks = k1
    a1.sources.r1.type = netcat
    a1.sources.r1.bind = localhost
    a1.sources.r1.port = notaport
    a1.sources.r1.channels = c1
    a1.sources.r2.type = seq
    a1.sources.r2.channels = c1
    a1.sources.r2.totalEvents = -5
    a1.channels.c1.type = memroy
    a1.sinks.k1.type = logger
    a1.sinks.k1.channel = c1
    a1.sinks.k1.maxBytesToLog = 0
    a1.sinks.k2.type = null
    """
    exc = invalid(text)
    assert "expected a whole number (got 'notaport')" in error_for(exc, "a1.sources.r1.port")
    assert "must be 0 or more (got '-5')" in error_for(exc, "a1.sources.r2.totalEvents")
    assert "did you mean 'memory'" in error_for(exc, "a1.channels.c1.type")
    assert "must be greater than 0 (got '0')" in error_for(exc, "a1.sinks.k1.maxBytesToLog")
    assert "not listed in a1.sinks" in error_for(exc, "a1.sinks.k2")
    assert len(exc.errors) == 5, messages(exc)


# --- types -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,key,bad,good", [
    ("sink", "a1.sinks.k1.type", "loger", "logger"),
    ("sink", "a1.sinks.k1.type", "nul", "null"),
    ("sink", "a1.sinks.k1.type", "file-roll", "file_roll"),
    ("source", "a1.sources.r1.type", "netcta", "netcat"),
    ("source", "a1.sources.r1.type", "sequ", "seq"),
    ("channel", "a1.channels.c1.type", "memorry", "memory"),
])
def test_misspelt_type_did_you_mean(kind, key, bad, good):
    exc = invalid(_with_type(key, bad))
    message = error_for(exc, key)
    assert f"unknown {kind} type '{bad}'" in message
    assert f"did you mean '{good}'?" in message
    assert "available:" in message


def _with_type(key: str, type_name: str, base: str = NETCAT_LOGGER) -> str:
    return "".join((f"{key} = {type_name}" if l.startswith(key + " ") else l) + "\n" for l in base.splitlines())


@pytest.mark.parametrize("key,type_name", [
    ("a1.sinks.k1.type", "hive"),
    ("a1.sinks.k1.type", "irc"),
    ("a1.sinks.k1.type", "org.apache.flume.sink.hive.HiveSink"),
    ("a1.sources.r1.type", "jms"),
    ("a1.sources.r1.type", "JMS"),
    ("a1.sources.r1.type", "kafka"),
    ("a1.sources.r1.type", "org.apache.flume.source.StressSource"),
    ("a1.sources.r1.type", "org.apache.flume.source.kafka.KafkaSource"),
    ("a1.channels.c1.type", "SPILLABLEMEMORY"),
    ("a1.channels.c1.type", "jdbc"),
])
def test_flume_type_not_implemented_yet(key, type_name):
    exc = invalid(_with_type(key, type_name))
    message = error_for(exc, key)
    assert f"'{type_name}' is a Flume type that Flumery does not have yet" in message
    assert "did you mean" not in message


@pytest.mark.parametrize("key,fqcn,cls", [
    ("a1.sinks.k1.type", "org.apache.flume.sink.NullSink", NullSink),
    ("a1.sinks.k1.type", "org.apache.flume.sink.LoggerSink", LoggerSink),
    ("a1.sources.r1.type", "org.apache.flume.source.NetcatSource", NetcatSource),
    ("a1.channels.c1.type", "org.apache.flume.channel.MemoryChannel", MemoryChannel),
    ("a1.channels.c1.type", "org.apache.flume.channel.file.FileChannel", FileChannel),
])
def test_flume_class_names_are_aliases(key, fqcn, cls):
    config = parse(_with_type(key, fqcn))
    kind, name = key.split(".")[1:3]
    component = getattr(config, kind)[name]
    assert component.cls is cls
    assert component.type == fqcn


@pytest.mark.parametrize("key,alias,cls", [
    ("a1.sources.r1.type", "NETCAT", NetcatSource),
    ("a1.sources.r1.type", "NetCat", NetcatSource),
    ("a1.channels.c1.type", "Memory", MemoryChannel),
    ("a1.channels.c1.type", "FILE", FileChannel),
    ("a1.sinks.k1.type", "LOGGER", LoggerSink),
])
def test_aliases_are_case_insensitive(key, alias, cls):
    config = parse(_with_type(key, alias))
    kind, name = key.split(".")[1:3]
    assert getattr(config, kind)[name].cls is cls


def test_third_party_module_class_path():
    config = parse(_with_type("a1.sinks.k1.type", "workers.sinks.null:NullSink", SEQ_NULL))
    assert config.sinks["k1"].cls is NullSink


def test_unknown_dotted_class_name_hints_module_class():
    exc = invalid(_with_type("a1.sinks.k1.type", "com.example.flume.MySink", SEQ_NULL))
    message = error_for(exc, "a1.sinks.k1.type")
    assert "unknown sink type 'com.example.flume.MySink'" in message
    assert "module:Class" in message


def test_missing_type_is_required():
    exc = invalid(without(SEQ_NULL, "a1.sinks.k1.type"))
    assert "required property is missing" in error_for(exc, "a1.sinks.k1.type")


# --- properties ------------------------------------------------------------------------------------------------

def test_unknown_property_did_you_mean():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sources.r1.max-line-lenght = 100"))
    message = error_for(exc, "a1.sources.r1.max-line-lenght")
    assert message.startswith("unknown property")
    assert "did you mean 'max-line-length'?" in message
    assert "known: type, channels, selector.type, interceptors, bind, port, max-line-length, ack-every-event" in message


def test_unknown_property_on_component_without_properties():
    exc = invalid(with_lines(SEQ_NULL, "a1.sinkgroups = g1", "a1.sinkgroups.g1.sinks = k1",
                             "a1.sinkgroups.g1.processor.foo = 1"))
    message = error_for(exc, "a1.sinkgroups.g1.processor.foo")
    assert "unknown property" in message and "takes no properties" in message


def test_unknown_channel_property():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.channels.c1.transactionCapacit = 10"))
    assert "did you mean 'transactionCapacity'?" in error_for(exc, "a1.channels.c1.transactionCapacit")


def test_bad_int_names_key_and_value():
    exc = invalid(NETCAT_LOGGER.replace("port = 44444", "port = 44x44"))
    assert str(exc) == "a1.sources.r1.port: expected a whole number (got '44x44')"


def test_port_out_of_range():
    exc = invalid(NETCAT_LOGGER.replace("port = 44444", "port = 70000"))
    assert "must be a TCP port (0-65535) (got '70000')" in error_for(exc, "a1.sources.r1.port")


def test_bad_bool_names_key_and_value():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sources.r1.ack-every-event = yes"))
    assert str(exc) == "a1.sources.r1.ack-every-event: expected true or false (got 'yes')"


def test_bad_choice_value():
    text = with_lines(_with_type("a1.sinks.k1.type", "file_roll", SEQ_NULL),
                      "a1.sinks.k1.sink.directory = /tmp/x",
                      "a1.sinks.k1.sink.serializer = TXT")
    exc = invalid(text)
    message = error_for(exc, "a1.sinks.k1.sink.serializer")
    assert "must be one of TEXT, header_and_text" in message and "(got 'TXT')" in message


def test_missing_required_property():
    exc = invalid(without(NETCAT_LOGGER, "a1.sources.r1.port"))
    assert str(exc) == "a1.sources.r1.port: required property is missing"


def test_missing_required_file_roll_directory():
    exc = invalid(_with_type("a1.sinks.k1.type", "file_roll", SEQ_NULL))
    assert "required property is missing" in error_for(exc, "a1.sinks.k1.sink.directory")


def test_file_roll_typed_values():
    config = parse(with_lines(_with_type("a1.sinks.k1.type", "file_roll", SEQ_NULL),
                              "a1.sinks.k1.sink.directory = /tmp/flume",
                              "a1.sinks.k1.sink.rollInterval = 0"))
    sink = config.sinks["k1"]
    assert sink.cls is FileRollSink
    assert sink.config.directory == "/tmp/flume"
    assert sink.config.roll_interval_s == 0


# --- wiring ----------------------------------------------------------------------------------------------------

def test_sink_without_channel():
    exc = invalid(without(NETCAT_LOGGER, "a1.sinks.k1.channel"))
    assert "required property is missing" in error_for(exc, "a1.sinks.k1.channel")


def test_sink_with_unknown_channel():
    exc = invalid(NETCAT_LOGGER.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.channel = c2"))
    assert str(exc) == "a1.sinks.k1.channel: unknown channel 'c2' (known: c1)"


def test_sink_channel_did_you_mean():
    text = NETCAT_LOGGER.replace("a1.channels = c1", "a1.channels = mem1").replace("channels.c1.", "channels.mem1.")
    text = text.replace("a1.sources.r1.channels = c1", "a1.sources.r1.channels = mem1")
    text = text.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.channel = mem2")
    exc = invalid(text)
    assert "unknown channel 'mem2' (known: mem1); did you mean 'mem1'?" in error_for(exc, "a1.sinks.k1.channel")


def test_sink_with_two_channels():
    exc = invalid(with_lines(SEQ_NULL, "a1.channels = c1 c2", "a1.channels.c2.type = memory",
                             "a1.sinks.k1.channel = c1 c2"))
    assert "exactly one channel (got 'c1 c2')" in error_for(exc, "a1.sinks.k1.channel")


def test_source_channels_unknown():
    exc = invalid(NETCAT_LOGGER.replace("a1.sources.r1.channels = c1", "a1.sources.r1.channels = c1 c5 c6"))
    assert len(exc.errors) == 2, messages(exc)
    assert "a1.sources.r1.channels: unknown channel 'c5' (known: c1)" in str(exc)
    assert "a1.sources.r1.channels: unknown channel 'c6' (known: c1)" in str(exc)


def test_source_without_channels():
    exc = invalid(without(NETCAT_LOGGER, "a1.sources.r1.channels"))
    assert "required property is missing" in error_for(exc, "a1.sources.r1.channels")


def test_source_with_singular_channel():
    exc = invalid(NETCAT_LOGGER.replace("a1.sources.r1.channels = c1", "a1.sources.r1.channel = c1"))
    assert "'channels' (plural)" in error_for(exc, "a1.sources.r1.channel")
    assert "required property is missing" in error_for(exc, "a1.sources.r1.channels")


def test_sink_with_plural_channels():
    exc = invalid(NETCAT_LOGGER.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.channels = c1"))
    assert "exactly one 'channel' (singular)" in error_for(exc, "a1.sinks.k1.channels")
    assert "required property is missing" in error_for(exc, "a1.sinks.k1.channel")


@pytest.mark.parametrize("kind,name,listed", [
    ("sources", "r2", "r1"),
    ("sinks", "k2", "k1"),
    ("channels", "c2", "c1"),
])
def test_component_configured_but_not_listed(kind, name, listed):
    exc = invalid(with_lines(NETCAT_LOGGER, f"a1.{kind}.{name}.type = whatever"))
    message = error_for(exc, f"a1.{kind}.{name}")
    assert f"'{name}' is configured but not listed in a1.{kind} (listed: {listed})" in message


def test_configured_but_not_listed_did_you_mean():
    text = NETCAT_LOGGER.replace("a1.sinks = k1", "a1.sinks = sink1").replace("a1.sinks.k1.", "a1.sinks.snik1.")
    exc = invalid(text)
    assert "did you mean 'sink1'?" in error_for(exc, "a1.sinks.snik1")


def test_listed_component_without_properties():
    exc = invalid(NETCAT_LOGGER.replace("a1.sinks = k1", "a1.sinks = k1 k2"))
    assert "required property is missing" in error_for(exc, "a1.sinks.k2.type")
    assert "required property is missing" in error_for(exc, "a1.sinks.k2.channel")


def test_unknown_top_level_key():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sorces = r1"))
    message = error_for(exc, "a1.sorces")
    assert "unknown key" in message and "did you mean 'sources'?" in message


def test_component_key_without_property():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sources.r1 = netcat"))
    assert "expected a1.sources.<name>.<property>" in error_for(exc, "a1.sources.r1")


def test_duplicate_names_in_list_are_merged():
    config = parse(NETCAT_LOGGER.replace("a1.sinks = k1", "a1.sinks = k1 k1"))
    assert list(config.sinks) == ["k1"]


def test_duplicate_key_last_wins_with_notice():
    config = parse(with_lines(NETCAT_LOGGER, "a1.sources.r1.port = 5555"))
    assert config.sources["r1"].config.port == 5555
    assert any("a1.sources.r1.port" in n and "lines 7 and 14" in n and "last one wins" in n
               for n in config.notices), config.notices


# --- key and value errors (Flume's AGENT_NAME_MISSING, PROPERTY_NAME_NULL, PROPERTY_VALUE_NULL) ----------------

def test_empty_value_error():
    exc = invalid(NETCAT_LOGGER.replace("a1.sources.r1.bind = localhost", "a1.sources.r1.bind ="))
    found = errors_for(exc, "a1.sources.r1.bind")
    assert "empty value (flume.conf:6)" in found
    assert all(e.key == "a1.sources.r1.bind" for e in exc.errors), messages(exc)


def test_whitespace_only_value_is_empty():
    exc = invalid(NETCAT_LOGGER.replace("a1.sources.r1.bind = localhost", "a1.sources.r1.bind =    "))
    assert any("empty value" in m for m in errors_for(exc, "a1.sources.r1.bind"))


@pytest.mark.parametrize("key", ["something", ".something"])
def test_key_without_agent_name(key):
    exc = invalid(with_lines(NETCAT_LOGGER, f"{key} = x"))
    message = error_for(exc, key)
    assert "does not start with an agent name" in message
    assert "flume.conf:14" in message


def test_property_name_missing_after_agent():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1. = x"))
    assert "property name missing" in error_for(exc, "a1.")


# --- ${env:...} ------------------------------------------------------------------------------------------------

def test_env_substitution():
    text = NETCAT_LOGGER.replace("port = 44444", "port = ${env:PORT}").replace(
        "bind = localhost", "bind = ${env:BIND:-127.0.0.1}")
    config = parse(text, environ={"PORT": "5140"})
    assert config.sources["r1"].config.port == 5140
    assert config.sources["r1"].config.bind == "127.0.0.1"


def test_env_substitution_missing_variable():
    text = NETCAT_LOGGER.replace("port = 44444", "port = ${env:PORT}")
    exc = invalid(text, environ={})
    found = [m for m in errors_for(exc, "a1.sources.r1.port") if "environment variable" in m]
    assert len(found) == 1
    assert "environment variable 'PORT' is not set" in found[0]
    assert "flume.conf:7" in found[0]
    assert all(e.key == "a1.sources.r1.port" for e in exc.errors), messages(exc)


def test_env_substitution_then_type_check():
    text = NETCAT_LOGGER.replace("port = 44444", "port = ${env:PORT}")
    exc = invalid(text, environ={"PORT": "http"})
    # The value came from the environment: it may be a secret, so the error says where it came from instead.
    assert "expected a whole number (got '<from ${env:PORT}>')" in error_for(exc, "a1.sources.r1.port")


def test_unsupported_reference_is_an_error():
    text = NETCAT_LOGGER.replace("bind = localhost", "bind = ${sys:host}")
    exc = invalid(text)
    assert "unsupported reference" in error_for(exc, "a1.sources.r1.bind")


# --- batch sizes and capacities --------------------------------------------------------------------------------

def test_source_batch_larger_than_transaction_capacity():
    text = with_lines(SEQ_NULL, "a1.sources.r1.batchSize = 200")
    exc = invalid(text)
    assert str(exc) == ("a1.sources.r1.batchSize: 200 is larger than the transactionCapacity (100) "
                        "of channel 'c1'")


def test_source_batch_checked_against_every_channel():
    text = with_lines(SEQ_NULL,
                      "a1.channels = c1 c2",
                      "a1.channels.c2.type = memory",
                      "a1.channels.c2.capacity = 1000",
                      "a1.channels.c2.transactionCapacity = 50",
                      "a1.channels.c1.transactionCapacity = 100",
                      "a1.sources.r1.channels = c1 c2",
                      "a1.sources.r1.batchSize = 80")
    exc = invalid(text)
    assert "transactionCapacity (50) of channel 'c2'" in error_for(exc, "a1.sources.r1.batchSize")


def test_sink_batch_larger_than_transaction_capacity():
    exc = invalid(with_lines(SEQ_NULL, "a1.sinks.k1.batchSize = 500"))
    assert "500 is larger than the transactionCapacity (100) of channel 'c1'" in error_for(
        exc, "a1.sinks.k1.batchSize")


def test_sink_default_batch_counts_for_batch_size_sinks():
    # Flume's NullSink supports batchSize (default 100): a channel of transactionCapacity 10 cannot feed it.
    exc = invalid(with_lines(SEQ_NULL, "a1.channels.c1.transactionCapacity = 10"))
    assert "100 is larger than the transactionCapacity (10)" in error_for(exc, "a1.sinks.k1.batchSize")


def test_file_roll_batch_key_in_message():
    text = with_lines(_with_type("a1.sinks.k1.type", "file_roll", SEQ_NULL),
                      "a1.sinks.k1.sink.directory = /tmp/x",
                      "a1.sinks.k1.sink.batchSize = 1000")
    exc = invalid(text)
    assert "1000 is larger than the transactionCapacity (100)" in error_for(exc, "a1.sinks.k1.sink.batchSize")


def test_batch_equal_to_transaction_capacity_is_fine():
    config = parse(with_lines(SEQ_NULL, "a1.sources.r1.batchSize = 100", "a1.sinks.k1.batchSize = 100"))
    assert config.sources["r1"].config.batch_size == 100
    assert config.sinks["k1"].config.batch_size == 100


def test_logger_sink_without_batch_size_fits_any_channel():
    # Flume's LoggerSink has no batchSize (it is not BatchSizeSupported), so Flume accepts this file; a
    # Flume file that runs today must not fail on a property the user never wrote.
    config = parse(with_lines(NETCAT_LOGGER, "a1.channels.c1.transactionCapacity = 10"))
    assert config.channels["c1"].config.transaction_capacity == 10


def test_transaction_capacity_larger_than_capacity():
    exc = invalid(with_lines(SEQ_NULL, "a1.channels.c1.capacity = 50", "a1.channels.c1.transactionCapacity = 60"))
    message = error_for(exc, "a1.channels.c1.transactionCapacity")
    assert "must not exceed capacity (60 > 50)" in message


def test_zero_capacity():
    exc = invalid(with_lines(SEQ_NULL, "a1.channels.c1.capacity = 0"))
    assert "must be greater than 0" in error_for(exc, "a1.channels.c1.capacity")


def test_file_channel_inert_properties_are_notices():
    text = with_lines(_with_type("a1.channels.c1.type", "file", SEQ_NULL),
                      "a1.channels.c1.checkpointDir = /mnt/flume/checkpoint",
                      "a1.channels.c1.dataDirs = /mnt/flume/data")
    config = parse(text)
    assert config.channels["c1"].cls is FileChannel
    checkpoint = [n for n in config.notices if "checkpointDir" in n]
    assert len(checkpoint) == 1
    assert "a1.channels.c1.checkpointDir = /mnt/flume/checkpoint" in checkpoint[0]
    assert "no effect" in checkpoint[0]
    assert any("a1.channels.c1.dataDirs" in n for n in config.notices)


def test_inert_notices_survive_in_config_invalid():
    text = with_lines(_with_type("a1.channels.c1.type", "file", SEQ_NULL),
                      "a1.channels.c1.checkpointDir = /mnt/flume/checkpoint",
                      "a1.sinks.k1.channel = c9")
    exc = invalid(text)
    assert [e.key for e in exc.errors] == ["a1.sinks.k1.channel"]
    assert any("checkpointDir" in n for n in exc.notices)


# --- agent shape -----------------------------------------------------------------------------------------------

def test_agent_without_channels_is_invalid():
    text = """\
    a1.sources = r1
    a1.sinks = k1
    a1.sources.r1.type = seq
    a1.sinks.k1.type = null
    """
    exc = invalid(text)
    assert "at least one channel" in error_for(exc, "a1.channels")


def test_agent_without_sources_or_sinks_is_invalid():
    exc = invalid("a1.channels = c1\na1.channels.c1.type = memory\n")
    assert "at least one source or sink" in error_for(exc, "a1.sources")


def test_agent_with_channels_and_sinks_but_no_sources_is_valid():
    config = parse(without(SEQ_NULL, "a1.sources"))
    assert config.sources == {}
    assert list(config.sinks) == ["k1"]


def test_agent_with_sources_only_is_valid():
    config = parse(without(SEQ_NULL, "a1.sinks"))
    assert config.sinks == {}
    assert list(config.sources) == ["r1"]


# --- selectors -------------------------------------------------------------------------------------------------

MULTIPLEXING = """\
a1.sources = r1
a1.channels = c1 c2 c3
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = State
a1.sources.r1.selector.mapping.CA = c1
a1.sources.r1.selector.mapping.AZ = c2
a1.sources.r1.selector.mapping.NY = c1 c2
a1.sources.r1.selector.optional.CA = c1 c2
a1.sources.r1.selector.default = c1
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.channels.c3.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def test_multiplexing_selector_config():
    config = parse(MULTIPLEXING)
    selector = config.sources["r1"].selector
    assert selector.cls is MultiplexingSelector
    assert selector.key == "a1.sources.r1.selector"
    assert selector.config.header == "State"
    assert selector.config.mapping == {"CA": "c1", "AZ": "c2", "NY": "c1 c2"}
    assert selector.config.optional == {"CA": "c1 c2"}
    assert selector.config.default == ["c1"]
    built = selector.cls("selector", selector.config, SelectorContext(tuple(config.sources["r1"].channels)))
    assert built.select({"State": "NY"}) == (["c1", "c2"], [])
    assert built.select({"State": "CA"}) == (["c1"], ["c2"])
    assert built.select({}) == (["c1"], [])


def test_multiplexing_mapping_to_channel_not_in_source():
    # c3 exists in the agent but the source does not feed it
    exc = invalid(MULTIPLEXING.replace("mapping.AZ = c2", "mapping.AZ = c3"))
    message = error_for(exc, "a1.sources.r1.selector.mapping.AZ")
    assert "channel 'c3' is not one of this source's channels (c1, c2)" in message


def test_multiplexing_unknown_default_and_optional_channels():
    text = MULTIPLEXING.replace("default = c1", "default = c9").replace("optional.CA = c1 c2", "optional.CA = cc2")
    exc = invalid(text)
    assert "channel 'c9' is not one of this source's channels" in error_for(exc, "a1.sources.r1.selector.default")
    message = error_for(exc, "a1.sources.r1.selector.optional.CA")
    assert "channel 'cc2'" in message and "did you mean 'c2'?" in message


def test_multiplexing_unknown_selector_property():
    exc = invalid(with_lines(MULTIPLEXING, "a1.sources.r1.selector.defualt = c1"))
    assert "did you mean 'default'?" in error_for(exc, "a1.sources.r1.selector.defualt")


def test_replicating_optional_channel_not_in_source():
    exc = invalid(with_lines(SEQ_NULL, "a1.sources.r1.selector.optional = c2"))
    assert "channel 'c2' is not one of this source's channels (c1)" in error_for(
        exc, "a1.sources.r1.selector.optional")


def test_selector_type_misspelt():
    exc = invalid(with_lines(SEQ_NULL, "a1.sources.r1.selector.type = multiplexin"))
    message = error_for(exc, "a1.sources.r1.selector.type")
    assert "unknown channel selector type 'multiplexin'" in message
    assert "did you mean 'multiplexing'?" in message


def test_selector_fqcn():
    config = parse(with_lines(SEQ_NULL,
                              "a1.sources.r1.selector.type = org.apache.flume.channel.MultiplexingChannelSelector",
                              "a1.sources.r1.selector.default = c1"))
    assert config.sources["r1"].selector.cls is MultiplexingSelector


# --- interceptors ----------------------------------------------------------------------------------------------

def test_interceptor_configured_but_not_listed():
    exc = invalid(with_lines(SEQ_NULL, "a1.sources.r1.interceptors = i1",
                             "a1.sources.r1.interceptors.i1.type = timestamp",
                             "a1.sources.r1.interceptors.i2.type = host"))
    message = error_for(exc, "a1.sources.r1.interceptors.i2")
    assert "configured but not listed in a1.sources.r1.interceptors" in message
    assert not any(e.key.startswith("a1.sources.r1.interceptors.i1") for e in exc.errors)   # i1 itself is fine


# --- sink groups -----------------------------------------------------------------------------------------------

def test_sink_group_with_unknown_sink():
    text = with_lines(SEQ_NULL, "a1.sinkgroups = g1", "a1.sinkgroups.g1.sinks = k9")
    exc = invalid(text)
    assert "a1.sinkgroups.g1.sinks: unknown sink 'k9' (known: k1)" in str(exc)


def test_sink_group_did_you_mean():
    text = SEQ_NULL.replace("a1.sinks = k1", "a1.sinks = k1 k2") + (
        "a1.sinks.k2.type = null\na1.sinks.k2.channel = c1\n"
        "a1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1 kk2\n")
    exc = invalid(text)
    message = error_for(exc, "a1.sinkgroups.g1.sinks")
    assert "unknown sink 'kk2'" in message and "did you mean 'k2'?" in message


def test_sink_group_default_processor():
    config = parse(with_lines(SEQ_NULL, "a1.sinkgroups = g1", "a1.sinkgroups.g1.sinks = k1"))
    group = config.sinkgroups["g1"]
    assert group.sinks == ("k1",)
    assert group.processor.cls is DefaultSinkProcessor
    assert config.sink_units() == [("g1", ("k1",))]


def test_sink_group_default_processor_takes_one_sink():
    text = SEQ_NULL.replace("a1.sinks = k1", "a1.sinks = k1 k2") + (
        "a1.sinks.k2.type = null\na1.sinks.k2.channel = c1\n"
        "a1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1 k2\n")
    exc = invalid(text)
    assert "exactly one sink" in error_for(exc, "a1.sinkgroups.g1.processor.type")


def test_sink_in_two_groups():
    text = with_lines(SEQ_NULL, "a1.sinkgroups = g1 g2", "a1.sinkgroups.g1.sinks = k1", "a1.sinkgroups.g2.sinks = k1")
    exc = invalid(text)
    assert "sink 'k1' is already in sink group 'g1'" in error_for(exc, "a1.sinkgroups.g2.sinks")


def test_sink_group_without_sinks():
    exc = invalid(with_lines(SEQ_NULL, "a1.sinkgroups = g1", "a1.sinkgroups.g1.processor.type = default"))
    assert "required property is missing" in error_for(exc, "a1.sinkgroups.g1.sinks")


def test_sink_group_unknown_property():
    exc = invalid(with_lines(SEQ_NULL, "a1.sinkgroups = g1", "a1.sinkgroups.g1.sinks = k1",
                             "a1.sinkgroups.g1.sink = k1"))
    assert "unknown property" in error_for(exc, "a1.sinkgroups.g1.sink")


def test_sink_group_over_two_channels():
    text = """\
    a1.sources = r1
    a1.channels = c1 c2
    a1.sinks = k1 k2
    a1.sources.r1.type = seq
    a1.sources.r1.channels = c1 c2
    a1.channels.c1.type = memory
    a1.channels.c2.type = memory
    a1.sinks.k1.type = null
    a1.sinks.k1.channel = c1
    a1.sinks.k2.type = null
    a1.sinks.k2.channel = c2
    a1.sinkgroups = g1
    a1.sinkgroups.g1.sinks = k1 k2
    a1.sinkgroups.g1.processor.type = default
    """
    exc = invalid(text)
    assert "one channel" in error_for(exc, "a1.sinkgroups.g1.sinks")


# --- what a newcomer trips on (issue 9) ----------------------------------------------------------------------------

def test_a_misspelt_channel_key_of_a_sink_gets_a_did_you_mean():
    exc = invalid(NETCAT_LOGGER.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.chanel = c1"))
    message = error_for(exc, "a1.sinks.k1.chanel")
    assert message.startswith("unknown property; did you mean 'channel'?"), message
    assert "known: type, channel, maxAttempts, maxBytesToLog, batchSize" in message
    assert "required property is missing" in error_for(exc, "a1.sinks.k1.channel")


@pytest.mark.parametrize("line,key,meant", [
    ("a1.sources.r1.chanels = c1", "a1.sources.r1.chanels", "channels"),
    ("a1.sources.r1.interceptor = i1", "a1.sources.r1.interceptor", "interceptors"),
    ("a1.sinks.k1.maxAttempt = 3", "a1.sinks.k1.maxAttempt", "maxAttempts"),
    ("a1.channels.c1.typ = memory", "a1.channels.c1.typ", "type"),
])
def test_keys_the_builder_reads_are_did_you_mean_candidates(line, key, meant):
    exc = invalid(with_lines(NETCAT_LOGGER, line))
    assert f"did you mean '{meant}'?" in error_for(exc, key)


SEARCH_REPLACE = with_lines(NETCAT_LOGGER, "a1.sources.r1.interceptors = i1",
                            "a1.sources.r1.interceptors.i1.type = search_replace",
                            "a1.sources.r1.interceptors.i1.searchPattern = ^prefix:",
                            "a1.sources.r1.interceptors.i1.replaceString =")


def test_an_empty_replace_string_removes_what_the_pattern_matched():
    """Flume: "replaceString ... empty is OK" (its TestSearchAndReplaceInterceptor removes a prefix this way)."""
    spec = parse(SEARCH_REPLACE).sources["r1"].interceptors[0]
    interceptor = spec.cls(spec.name, spec.config, InterceptorContext("a1", "r1"))
    assert spec.config.replace_string == ""
    assert interceptor.intercept(Event(b"prefix:the rest")).body == b"the rest"


@pytest.mark.parametrize("line,field,value", [
    ("a1.sinks.k1.sink.pathManager.prefix =", "prefix", ""),
    ("a1.sinks.k1.sink.pathManager.extension =", "extension", ""),
])
def test_empty_values_are_accepted_where_flume_means_the_empty_default(line, field, value):
    text = NETCAT_LOGGER.replace("a1.sinks.k1.type = logger", "a1.sinks.k1.type = file_roll\n"
                                 "a1.sinks.k1.sink.directory = /tmp/out")
    assert getattr(parse(with_lines(text, line)).sinks["k1"].config, field) == value


def test_an_empty_optional_header_name_means_unset():
    text = with_lines(NETCAT_LOGGER, "a1.sources.r1.interceptors = i1",
                      "a1.sources.r1.interceptors.i1.type = remove_header",
                      "a1.sources.r1.interceptors.i1.withName =",
                      "a1.sources.r1.interceptors.i1.fromList = a,b")
    assert parse(text).sources["r1"].interceptors[0].config.with_name is None


def test_an_empty_required_property_is_still_an_error_with_its_line():
    exc = invalid(SEARCH_REPLACE.replace("searchPattern = ^prefix:", "searchPattern ="))
    assert error_for(exc, "a1.sources.r1.interceptors.i1.searchPattern") == "empty value (flume.conf:16)"


def test_an_empty_value_flume_would_replace_by_a_default_is_an_error_naming_that_default():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sources.r1.interceptors = i1",
                             "a1.sources.r1.interceptors.i1.type = static",
                             "a1.sources.r1.interceptors.i1.value ="))
    message = error_for(exc, "a1.sources.r1.interceptors.i1.value")
    assert message == ("empty value; Flume ignores the line and uses the default 'value': give a value, or "
                       "remove the line (flume.conf:16)")


@pytest.mark.parametrize("line,key", [
    ("a1.sinks.k1.maxAttempts =", "a1.sinks.k1.maxAttempts"),
    ("a1.sources.r1.interceptors =", "a1.sources.r1.interceptors"),
    ("a1.sources.r1.selector.type =", "a1.sources.r1.selector.type"),
])
def test_structural_keys_are_never_empty(line, key):
    assert error_for(invalid(with_lines(NETCAT_LOGGER, line)), key).startswith("empty value (flume.conf:")


def test_an_empty_value_under_a_prefix_is_an_error():
    exc = invalid(with_lines(NETCAT_LOGGER, "a1.sources.r1.selector.type = multiplexing",
                             "a1.sources.r1.selector.header = h", "a1.sources.r1.selector.mapping.x =",
                             "a1.sources.r1.selector.default = c1"))
    assert error_for(exc, "a1.sources.r1.selector.mapping.x").startswith("empty value (flume.conf:")
