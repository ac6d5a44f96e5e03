"""``flumery validate`` on the Flume User Guide example files, as a command."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLES, REPO

FLUMERY = REPO / ".venv" / "bin" / "flumery"


# --- the command line ------------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [str(FLUMERY)] if FLUMERY.exists() else [sys.executable, "-m", "app.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("name,agent", [("a-netcat-logger.conf", "a1"), ("c-replicating.conf", "a1")])
def test_cli_validate_ok(name, agent):
    result = run_cli("validate", "-f", str(EXAMPLES / name), "-n", agent)
    assert result.returncode == 0, result.stderr
    assert f"agent '{agent}'" in result.stdout and "valid" in result.stdout
    assert "not valid" not in result.stderr


def test_cli_validate_flume_spellings():
    result = run_cli("validate", "--conf-file", str(EXAMPLES / "a-netcat-logger.conf"), "--name", "a1",
                     "-c", "/etc/flume/conf")
    assert result.returncode == 0, result.stderr


def test_cli_validate_spooldir_hdfs_example_with_the_tiny_files_notice():
    result = run_cli("validate", "-f", str(EXAMPLES / "f-spooldir-hdfs.conf"), "-n", "a1")
    assert result.returncode == 0, result.stderr
    assert "k1             hdfs" in result.stdout
    assert "note: a1.sinks.k1.hdfs.rollCount = 10: every file closes after 10 events" in result.stdout


def test_cli_validate_unknown_agent():
    result = run_cli("validate", "-f", str(EXAMPLES / "a-netcat-logger.conf"), "-n", "nope")
    assert result.returncode == 2
    assert "no agent named 'nope'" in result.stderr
    assert "agents: a1" in result.stderr
