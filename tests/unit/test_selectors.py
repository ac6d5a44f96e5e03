"""routing/selectors.py against Flume's own selector test cases (flume-compat/vectors.json)."""
from __future__ import annotations

import json

import pytest
from conftest import VECTORS

from core import options
from core.config import build_config, parse_agent
from core.errors import ConfigInvalid
from core.registries import SELECTORS
from routing.selectors import DEFAULT_HEADER, MultiplexingSelector, ReplicatingSelector, SelectorContext

VECTOR_DATA = json.loads(VECTORS.read_text())
MUX_GROUP = VECTOR_DATA["MultiplexingChannelSelector"]
REP_GROUP = VECTOR_DATA["ReplicatingChannelSelector"]
MUX_CASES = [c for c in MUX_GROUP if "rules" not in c]
MUX_RULES = next(c for c in MUX_GROUP if "rules" in c)
REP_CASES = [c for c in REP_GROUP if "rules" not in c]

PREFIX = "a1.sources.r1.selector."


def make(channels: list[str], selector_config: dict[str, str]):
    """Build a selector as app/config.py does: resolve the type, build its Config from the other properties."""
    props = dict(selector_config)
    cls = SELECTORS.resolve(props.pop("type", "replicating"))
    config, errors, _notices = build_config(cls, props, PREFIX, tuple(channels))
    assert errors == [], errors
    return cls("selector", config, SelectorContext(tuple(channels)))


def case_id(case: dict) -> str:
    headers = case.get("event_headers")
    return case["test"] + ("" if headers is None else ":" + ",".join(f"{k}={v}" for k, v in headers.items()))


def test_vector_groups_are_present():
    assert len(MUX_CASES) == 10
    assert len(REP_CASES) == 4
    assert len(MUX_RULES["rules"]) == 8


@pytest.mark.parametrize("case", MUX_CASES, ids=[case_id(c) for c in MUX_CASES])
def test_multiplexing_vectors(case):
    selector = make(case["channels"], case["selector_config"])
    assert isinstance(selector, MultiplexingSelector)
    required, optional = selector.select(case["event_headers"])
    assert required == case["expected_required"]
    assert optional == case["expected_optional"]


@pytest.mark.parametrize("case", REP_CASES, ids=[case_id(c) for c in REP_CASES])
def test_replicating_vectors(case):
    selector = make(case["channels"], case["selector_config"])
    assert isinstance(selector, ReplicatingSelector)
    for headers in ({}, {"any": "thing"}, {DEFAULT_HEADER: "x"}):
        required, optional = selector.select(headers)
        assert required == case["expected_required"]
        assert optional == case["expected_optional"]
    assert selector.uniform is True


# --- the multiplexing rules ------------------------------------------------------------------------------------

CHANNELS = MUX_RULES["getAllChannels_order"]          # ch1 ch2 ch3


def test_rule_default_header_name():
    assert DEFAULT_HEADER == "flume.selector.header"
    selector = make(CHANNELS, {"type": "multiplexing", "mapping.a": "ch2", "default": "ch1"})
    assert selector.header == "flume.selector.header"
    assert selector.select({"flume.selector.header": "a"}) == (["ch2"], [])
    assert selector.select({"other": "a"}) == (["ch1"], [])
    assert selector.uniform is False


@pytest.mark.parametrize("value", [None, "", " ", "   ", "\t", " \t "], ids=repr)
def test_rule_missing_or_blank_header_gives_default(value):
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "mapping.x": "ch2", "default": "ch1 ch3"})
    headers = {} if value is None else {"h": value}
    assert selector.select(headers) == (["ch1", "ch3"], [])


def test_rule_whitespace_value_is_default_even_if_mapped():
    # Flume checks StringUtils.isBlank before the mapping: a blank value never selects a mapping.
    config = options.build(MultiplexingSelector.Config, {"header": "h", "default": "ch1"}, PREFIX)[0]
    config = type(config)(header="h", mapping={" ": "ch2"}, optional={}, default=["ch1"])
    selector = MultiplexingSelector("selector", config, SelectorContext(tuple(CHANNELS)))
    assert selector.select({"h": " "}) == (["ch1"], [])


@pytest.mark.parametrize("value", ["FOO", "Foo", "foo ", " foo"])
def test_rule_lookup_is_exact_and_case_sensitive(value):
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "mapping.foo": "ch2", "default": "ch1"})
    assert selector.select({"h": "foo"}) == (["ch2"], [])
    assert selector.select({"h": value}) == (["ch1"], [])


def test_rule_header_name_is_case_sensitive():
    selector = make(CHANNELS, {"type": "multiplexing", "header": "State", "mapping.CA": "ch2", "default": "ch1"})
    assert selector.select({"State": "CA"}) == (["ch2"], [])
    assert selector.select({"state": "CA"}) == (["ch1"], [])


def test_rule_optional_minus_required():
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "mapping.v": "ch1 ch2",
                               "optional.v": "ch2 ch3 ch1"})
    assert selector.select({"h": "v"}) == (["ch1", "ch2"], ["ch3"])


def test_rule_optional_looked_up_by_raw_value_when_required_is_default():
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "default": "ch1",
                               "optional.unmapped": "ch1 ch2 ch3"})
    assert selector.select({"h": "unmapped"}) == (["ch1"], ["ch2", "ch3"])


def test_rule_unknown_channel_is_reported():
    config, errors, _ = options.build(MultiplexingSelector.Config,
                                      {"header": "h", "mapping.a": "ch1 ch9", "optional.b": "ch8",
                                       "default": "ch7"}, PREFIX)
    assert errors == []
    problems = dict(MultiplexingSelector.check(config, tuple(CHANNELS)))
    assert set(problems) == {"mapping.a", "optional.b", "default"}
    assert "channel 'ch9' is not one of this source's channels (ch1, ch2, ch3)" in problems["mapping.a"]
    assert "'ch8'" in problems["optional.b"]
    assert "'ch7'" in problems["default"]


def test_rule_mapping_without_channels_is_reported():
    config = MultiplexingSelector.Config(header="h", mapping={"a": ""}, optional={}, default=["ch1"])
    problems = MultiplexingSelector.check(config, tuple(CHANNELS))
    assert problems == [("mapping.a", "maps to no channel")]


def test_rule_lists_are_split_on_space_and_deduplicated():
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "mapping.a": "ch3 ch1 ch3",
                               "optional.a": "ch2 ch2", "default": "ch2 ch2"})
    assert selector.select({"h": "a"}) == (["ch3", "ch1"], ["ch2"])
    assert selector.select({}) == (["ch2"], [])


def test_select_ignores_other_headers_and_does_not_mutate_them():
    selector = make(CHANNELS, {"type": "multiplexing", "header": "h", "mapping.a": "ch2", "default": "ch1"})
    headers = {"h": "a", "x": "y", DEFAULT_HEADER: "b"}
    assert selector.select(headers) == (["ch2"], [])
    assert selector.select(headers) == (["ch2"], [])
    assert headers == {"h": "a", "x": "y", DEFAULT_HEADER: "b"}


# --- replicating -----------------------------------------------------------------------------------------------

def test_replicating_keeps_source_channel_order():
    selector = make(["c3", "c1", "c2"], {"optional": "c2 c3"})
    assert selector.select({}) == (["c1"], ["c3", "c2"])


def test_replicating_all_optional():
    selector = make(["c1", "c2"], {"optional": "c2 c1"})
    assert selector.select({}) == ([], ["c1", "c2"])


def test_replicating_unknown_optional_channel_reported():
    config, errors, _ = options.build(ReplicatingSelector.Config, {"optional": "c1 c9"}, PREFIX)
    assert errors == []
    problems = ReplicatingSelector.check(config, ("c1", "c2"))
    assert len(problems) == 1
    prop, message = problems[0]
    assert prop == "optional"
    assert "channel 'c9' is not one of this source's channels (c1, c2)" in message


def test_replicating_unknown_property():
    _config, errors, _ = options.build(ReplicatingSelector.Config, {"optinal": "c1"}, PREFIX)
    assert len(errors) == 1
    assert errors[0].key == PREFIX + "optinal"
    assert "did you mean 'optional'?" in errors[0].message


def test_registry_names():
    assert SELECTORS.resolve("replicating") is ReplicatingSelector
    assert SELECTORS.resolve("MULTIPLEXING") is MultiplexingSelector
    assert SELECTORS.resolve("org.apache.flume.channel.ReplicatingChannelSelector") is ReplicatingSelector
    assert SELECTORS.resolve("org.apache.flume.channel.MultiplexingChannelSelector") is MultiplexingSelector


# --- through parse_agent ---------------------------------------------------------------------------------------

def agent_with_selector(*lines: str) -> str:
    base = [
        "a1.sources = r1",
        "a1.channels = ch1 ch2 ch3",
        "a1.sinks = k1",
        "a1.sources.r1.type = seq",
        "a1.sources.r1.channels = ch1 ch2 ch3",
        "a1.channels.ch1.type = memory",
        "a1.channels.ch2.type = memory",
        "a1.channels.ch3.type = memory",
        "a1.sinks.k1.type = null",
        "a1.sinks.k1.channel = ch1",
    ]
    return "\n".join(base + list(lines)) + "\n"


@pytest.mark.parametrize("case", MUX_CASES, ids=[case_id(c) for c in MUX_CASES])
def test_multiplexing_vectors_through_parse_agent(case):
    lines = [f"a1.sources.r1.selector.{k} = {v}" for k, v in case["selector_config"].items()]
    config = parse_agent(agent_with_selector(*lines), "a1", "flume.conf", {})
    spec = config.sources["r1"]
    selector = spec.selector.cls("selector", spec.selector.config, SelectorContext(tuple(spec.channels)))
    assert selector.select(case["event_headers"]) == (case["expected_required"], case["expected_optional"])


@pytest.mark.parametrize("case", REP_CASES, ids=[case_id(c) for c in REP_CASES])
def test_replicating_vectors_through_parse_agent(case):
    channels = case["channels"]
    text = "\n".join([
        "a1.sources = r1",
        f"a1.channels = {' '.join(channels)}",
        "a1.sources.r1.type = seq",
        f"a1.sources.r1.channels = {' '.join(channels)}",
        *[f"a1.channels.{c}.type = memory" for c in channels],
        "a1.sinks = k1", "a1.sinks.k1.type = null", f"a1.sinks.k1.channel = {channels[0]}",
        *[f"a1.sources.r1.selector.{k} = {v}" for k, v in case["selector_config"].items()],
    ]) + "\n"
    config = parse_agent(text, "a1", "flume.conf", {})
    spec = config.sources["r1"]
    assert spec.selector.cls is ReplicatingSelector
    selector = spec.selector.cls("selector", spec.selector.config, SelectorContext(tuple(spec.channels)))
    assert selector.select({}) == (case["expected_required"], case["expected_optional"])


def test_parse_agent_reports_every_unknown_selector_channel():
    text = agent_with_selector(
        "a1.sources.r1.selector.type = multiplexing",
        "a1.sources.r1.selector.header = h",
        "a1.sources.r1.selector.mapping.a = ch1 ch4",
        "a1.sources.r1.selector.optional.a = ch5",
        "a1.sources.r1.selector.default = ch6",
    )
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(text, "a1", "flume.conf", {})
    by_key = {e.key: e.message for e in info.value.errors}
    assert set(by_key) == {"a1.sources.r1.selector.mapping.a", "a1.sources.r1.selector.optional.a",
                           "a1.sources.r1.selector.default"}
    assert "channel 'ch4' is not one of this source's channels (ch1, ch2, ch3)" in by_key[
        "a1.sources.r1.selector.mapping.a"]
    assert "'ch5'" in by_key["a1.sources.r1.selector.optional.a"]
    assert "'ch6'" in by_key["a1.sources.r1.selector.default"]


def test_parse_agent_replicating_unknown_optional():
    text = agent_with_selector("a1.sources.r1.selector.optional = ch3 c99")
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(text, "a1", "flume.conf", {})
    assert str(info.value) == ("a1.sources.r1.selector.optional: channel 'c99' is not one of this source's "
                               "channels (ch1, ch2, ch3)")
