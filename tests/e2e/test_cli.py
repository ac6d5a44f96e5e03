"""The ``flumery`` command line as a newcomer meets it: version, plain one-line errors, a readable summary, and
the README's sample output being what the command really prints."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

README_SAMPLE_CONF = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcta
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c9
"""


def flumery(*args: str, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)


def test_version():
    result = flumery("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"flumery \d+\.\d+\.\d+\n", result.stdout), result.stdout


def test_a_missing_file_is_one_plain_line(tmp_path):
    result = flumery("validate", "-f", "nope.conf", "-n", "a1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "flumery: cannot read configuration file 'nope.conf': No such file or directory\n"


def test_the_summary_shows_properties_as_in_the_file(tmp_path):
    (tmp_path / "t.conf").write_text("""\
a1.sources = r1
a1.channels = c1
a1.sources.r1.type = TAILDIR
a1.sources.r1.channels = c1
a1.sources.r1.filegroups = f1 f2
a1.sources.r1.filegroups.f1 = /var/log/a.log
a1.sources.r1.filegroups.f2 = /var/log/b.*
a1.channels.c1.type = memory
""")
    result = flumery("validate", "-f", "t.conf", "-n", "a1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "filegroups=f1 f2 filegroups.f1=/var/log/a.log filegroups.f2=/var/log/b.*" in result.stdout
    assert "{" not in result.stdout


def test_the_readme_sample_error_is_what_validate_prints(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```\n\s*(flumery: flume\.conf: agent 'a1' is not valid.*?)\n\s*```", readme, re.S)
    assert block, "the README's sample error block"
    sample = "".join(line.strip() + "\n" for line in block.group(1).splitlines())
    (tmp_path / "flume.conf").write_text(README_SAMPLE_CONF)
    result = flumery("validate", "-f", "flume.conf", "-n", "a1", cwd=tmp_path)
    assert result.returncode == 2
    assert "".join(line.strip() + "\n" for line in result.stderr.splitlines()) == sample


def test_worker_without_a_broker_says_so_in_one_line(tmp_path):
    (tmp_path / "flume.conf").write_text(README_SAMPLE_CONF.replace("netcta", "netcat").replace("c9", "c1")
                                         + "a1.sources.r1.bind = 127.0.0.1\na1.sources.r1.port = 0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FLUMERY_BROKER_URL", "REDIS_URL")}
    result = flumery("worker", "-f", "flume.conf", "-n", "a1", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr == "flumery worker: give the broker: --broker-url, FLUMERY_BROKER_URL or REDIS_URL\n"


def test_a_bad_celery_worker_option_is_its_usage_message_not_a_traceback(tmp_path):
    (tmp_path / "flume.conf").write_text(README_SAMPLE_CONF.replace("netcta", "netcat").replace("c9", "c1")
                                         + "a1.sources.r1.bind = 127.0.0.1\na1.sources.r1.port = 0\n")
    # The option is refused before the worker connects: no broker needs to be there.
    result = flumery("worker", "-f", "flume.conf", "-n", "a1", "--broker-url", "redis://127.0.0.1:1/0",
                     "--concurency", "2", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Error: No such option '--concurency'" in result.stderr and "Traceback" not in result.stderr


def test_unknown_options_are_refused_except_for_celery_commands(tmp_path):
    result = flumery("validate", "-f", "x.conf", "-n", "a1", "--port=5555", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --port=5555" in result.stderr
