"""The load_balancing channel selector against Flume's test case, and end to end through the channel processor."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from conftest import VECTORS

from core.config import parse_agent
from core.event import Batch
from core.options import build
from routing.processor import ChannelProcessor
from routing.selectors import LoadBalancingSelector, SelectorContext

CASES = json.loads(VECTORS.read_text())["LoadBalancingChannelSelector"]


@pytest.mark.parametrize("case", CASES, ids=[c["test"] for c in CASES])
def test_flume_vector(case):
    props = {k: v for k, v in case["selector_config"].items() if k != "type"}
    config, errors, _ = build(LoadBalancingSelector.Config, props, "a1.sources.r1.selector.")
    assert not errors
    selector = LoadBalancingSelector("selector", config, SelectorContext(tuple(case["channels"])))
    for expected in case["expected_required_per_event"]:
        assert selector.select({}) == (expected, case["expected_optional"])


def test_random_policy_spreads_events_over_every_channel():
    config, _, _ = build(LoadBalancingSelector.Config, {"policy": "random"}, "p.")
    selector = LoadBalancingSelector("selector", config, SelectorContext(("a", "b", "c")), rng=random.Random(1))
    counts = Counter(selector.select({})[0][0] for _ in range(3000))
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) > 800


def test_bad_policy_is_a_config_error():
    text = """
a1.sources = r1
a1.channels = c1 c2
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = load_balancing
a1.sources.r1.selector.policy = round_robbin
a1.channels.c1.type = memory
a1.channels.c2.type = memory
"""
    with pytest.raises(Exception) as info:
        parse_agent(text, "a1")
    assert "a1.sources.r1.selector.policy: must be one of round_robin, random; did you mean 'round_robin'?" in str(
        info.value)


class Writer:
    def __init__(self):
        self.puts = []

    def put(self, batches, message_events=0):
        self.puts.append({c: list(b.bodies) for c, b in batches.items()})


def test_channel_processor_puts_each_event_into_one_channel():
    config = parse_agent("""
a1.sources = r1
a1.channels = c1 c2
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = load_balancing
a1.channels.c1.type = memory
a1.channels.c2.type = memory
""", "a1")
    writer = Writer()
    ChannelProcessor(config.sources["r1"], writer, []).process(Batch([b"0", b"1", b"2", b"3"]))
    assert writer.puts == [{"c1": [b"0", b"2"], "c2": [b"1", b"3"]}]
