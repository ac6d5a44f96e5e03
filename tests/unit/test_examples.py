"""The Flume User Guide example files (flume-compat/examples): each validates, or fails only because it names a
Flume component type that Flumery does not have yet, and says which."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import EXAMPLES

from core import properties
from core.config import load_agent
from core.errors import ConfigInvalid
from routing.selectors import SelectorContext

FILES = sorted(EXAMPLES.glob("*.conf"))


def agent_name(path: Path) -> str:
    """The agent of an example: the prefix of its first ``x.sources`` / ``x.channels`` key."""
    for line in properties.parse(path.read_text()):
        m = re.fullmatch(r"([^.]+)\.(sources|channels)", line.key)
        if m:
            return m.group(1)
    raise AssertionError(f"{path.name} declares no sources or channels")


def file_values(path: Path) -> dict[str, str]:
    return {line.key: line.value for line in properties.parse(path.read_text())}


def test_examples_exist():
    names = [p.name for p in FILES]
    assert "a-netcat-logger.conf" in names and "g-taildir.conf" in names
    assert len(FILES) >= 9


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_validates_or_names_missing_types(path):
    agent = agent_name(path)
    values = file_values(path)
    try:
        config = load_agent(path, agent, environ={})
    except ConfigInvalid as exc:
        assert exc.errors, "ConfigInvalid without errors"
        for error in exc.errors:
            # The guide's files are valid Flume: the only acceptable reason to refuse one is a missing type.
            assert error.key.endswith(".type"), f"{path.name}: not a missing-type error: {error}"
            assert error.key in values, f"{path.name}: error on a key the file does not have: {error}"
            type_name = values[error.key]
            assert "does not have yet" in error.message, f"{path.name}: {error}"
            assert f"'{type_name}'" in error.message, f"{path.name}: {error} does not name {type_name}"
    else:
        assert config.name == agent
        declared = values.get(f"{agent}.sources", "").split()
        assert sorted(config.sources) == sorted(declared)
        assert sorted(config.channels) == sorted(values[f"{agent}.channels"].split())
        assert sorted(config.sinks) == sorted(values.get(f"{agent}.sinks", "").split())


def test_netcat_logger_example_details():
    config = load_agent(EXAMPLES / "a-netcat-logger.conf", "a1", environ={})
    assert config.sources["r1"].config.port == 44444
    assert config.sources["r1"].config.bind == "localhost"
    assert config.channels["c1"].config.capacity == 1000
    assert config.channels["c1"].config.transaction_capacity == 100
    assert config.sinks["k1"].channel == "c1"


def test_replicating_example_details():
    config = load_agent(EXAMPLES / "c-replicating.conf", "a1", environ={})
    source = config.sources["r1"]
    assert source.channels == ("c1", "c2", "c3")
    assert source.config.total_events == 1000
    selector = source.selector.cls("selector", source.selector.config, SelectorContext(tuple(source.channels)))
    assert selector.select({}) == (["c1", "c2"], ["c3"])


def test_taildir_example_validates():
    config = load_agent(EXAMPLES / "g-taildir.conf", "a1", environ={})
    assert config.sources["r1"].type == "TAILDIR"
