"""Values that came from ``${env:VAR}`` are never printed: not in configuration errors, not in notices, not in
``flumery validate``'s summary (issue 8, item 11).  A token in an exec command or a password in a port must not
end up in a terminal, a CI log or a ticket."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from agents import REPO

from app.cli import summary
from core.config import parse_agent
from core.errors import ConfigInvalid

TOKEN = "s3cr3t-bearer-token-0123456789"
ENV = {"TOKEN": TOKEN, "PORT": "hunter2", "SHORT": "x9", "CMD_USER": "deploy"}

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = exec
a1.sources.r1.command = curl -H 'Authorization: Bearer ${env:TOKEN}' https://example.invalid/${env:CMD_USER}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
"""


def errors_of(text: str, environ: dict) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_agent(text, "a1", environ=environ)
    return [str(e) for e in caught.value.errors] + list(caught.value.notices)


def test_a_bad_value_from_the_environment_is_masked_in_the_error():
    text = CONF + "a1.sinks.k1.maxBytesToLog = ${env:PORT}\n"
    [error] = errors_of(text, ENV)
    assert "hunter2" not in error
    assert error == "a1.sinks.k1.maxBytesToLog: expected a whole number (got '<from ${env:PORT}>')"


def test_a_short_value_from_the_environment_is_masked_where_it_is_the_bad_value():
    [error] = errors_of(CONF + "a1.sinks.k1.maxBytesToLog = 1${env:SHORT}\n", ENV)
    assert "x9" not in error
    assert error.endswith("(got '1<from ${env:SHORT}>')") or error.endswith("(got '<from ${env:SHORT}>')")


def test_a_secret_is_masked_in_every_message_not_only_its_own_key():
    """A value from the environment that ends up in other keys (here a channel name) is masked there too."""
    text = CONF.replace("a1.channels = c1", "a1.channels = c1 ${env:TOKEN}")
    text += "a1.sources.r1.restartThrottle = ${env:TOKEN}\n"
    messages = errors_of(text, ENV)
    assert len(messages) >= 2
    assert not any(TOKEN in m for m in messages), messages
    assert "a1.sources.r1.restartThrottle: expected a whole number (got '<from ${env:TOKEN}>')" in messages
    assert "a1.channels.<from ${env:TOKEN}>.type: required property is missing" in messages


def test_a_notice_does_not_show_a_value_from_the_environment():
    text = CONF.replace("a1.channels.c1.type = memory",
                        "a1.channels.c1.type = file\na1.channels.c1.checkpointDir = /${env:TOKEN}")
    config = parse_agent(text, "a1", environ=ENV)
    assert config.notices and not any(TOKEN in n for n in config.notices), config.notices


def test_validate_summary_masks_values_from_the_environment():
    config = parse_agent(CONF, "a1", environ=ENV)
    assert TOKEN in config.sources["r1"].config.command          # the agent itself gets the real value
    text = summary(config)
    assert TOKEN not in text and "deploy" not in text, text
    assert "Bearer <from ${env:TOKEN}>" in text
    assert "https://example.invalid/<from ${env:CMD_USER}>" in text


def test_flumery_validate_and_a_refused_agent_never_print_the_secret(tmp_path):
    """The two command paths, as an operator runs them, with the secret in the process environment."""
    conf = tmp_path / "a.conf"
    conf.write_text(CONF)
    env = {**os.environ, **ENV}
    valid = subprocess.run([sys.executable, "-m", "app.cli", "validate", "-f", str(conf), "-n", "a1"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert valid.returncode == 0, valid.stderr
    assert "<from ${env:TOKEN}>" in valid.stdout
    conf.write_text(CONF + "a1.sources.r1.batchSize = ${env:TOKEN}\n")
    refused = subprocess.run([sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "a1",
                              "--data-dir", str(tmp_path / "data")], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    assert "a1.sources.r1.batchSize: expected a whole number (got '<from ${env:TOKEN}>')" in refused.stderr
    for output in (valid.stdout, valid.stderr, refused.stdout, refused.stderr):
        assert TOKEN not in output
