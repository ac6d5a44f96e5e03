"""The README's configuration reference is the one the code generates, and its examples work (docs match
behaviour)."""
import shutil
import subprocess

from agents import AgentProcess, port_open, read_lines, wait_until

from app.broker import free_port
from app.reference import README, markdown, readme_block


def test_readme_reference_is_current():
    assert readme_block(README.read_text()) == markdown(), "run `make docs` (python -m app.reference --write)"


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text


NETCAT_CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
"""


def test_the_readme_netcat_example_works_without_nc(tmp_path, redis_server):
    """The quick start's netcat command, on a machine without ``nc`` (a fresh Debian): only bash on PATH."""
    line = next(line for line in README.read_text().splitlines() if "44444" in line and "head -n1" in line)
    port, out = free_port(), tmp_path / "out"
    command = line.split("   #")[0].strip().replace("44444", str(port))
    agent = AgentProcess(tmp_path, NETCAT_CONF.format(port=port, out=out), broker_url=redis_server.url).start()
    try:
        wait_until(lambda: port_open(port), 30, what="the netcat source")
        bare = tmp_path / "bin"
        bare.mkdir()
        for tool in ("bash", "head"):
            (bare / tool).symlink_to(shutil.which(tool))
        result = subprocess.run([str(bare / "bash"), "-c", command], env={"PATH": str(bare)}, capture_output=True,
                                text=True, timeout=30)
        assert result.stdout == "OK\n", result.stderr
        wait_until(lambda: read_lines(out), 30, what="the event in the file_roll sink")
    finally:
        stopped_with = agent.stop()
    assert stopped_with == 0
    assert read_lines(out) == [b"hello over netcat"]
