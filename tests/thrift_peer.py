"""The Thrift reference peer: Apache Thrift's own Python library (PyPI ``thrift``) with code generated from Flume's
``flume.thrift`` by Apache Thrift's compiler (Debian ``thrift-compiler``; ``make test`` installs it when run as root),
at test time into a cache folder named by the IDL's hash.  Nothing of Flumery's thrift code is used on this side.

* :func:`send`: a client (``TSocket`` + ``TFramedTransport`` + compact or binary protocol, the generated
  ``ThriftSourceProtocol.Client``): ``append`` of the first event, ``appendBatch`` of the rest.
* :class:`ApacheServer`: ``python tests/thrift_peer.py server PORT PROTOCOL OUT FAIL_FIRST``, a ``TThreadedServer``
  with framed transport whose handler appends each event to OUT (``base64(body) TAB base64(k):base64(v),...``) and
  answers OK (FAILED to the first FAIL_FIRST calls); it prints ``LISTENING <port>``.

A test that needs the peer fails when the compiler is missing: nothing here skips.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from base64 import b64decode, b64encode
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDL = HERE / "thrift_peer" / "flume.thrift"


def generated() -> Path:
    """The folder holding the generated ``flume`` package (generating it the first time)."""
    compiler = shutil.which("thrift")
    if not compiler:
        raise RuntimeError("no thrift compiler on PATH: apt-get install -y thrift-compiler (make test does it when "
                           "run as root)")
    digest = hashlib.sha256(IDL.read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("FLUMERY_THRIFT_PEER_CACHE", Path.home() / ".cache" / "flumery" / "thrift-peer"))
    target = root / f"gen-{digest}"
    if not (target / "flume" / "ThriftSourceProtocol.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=root, prefix=".gen-"))
        subprocess.run([compiler, "--gen", "py", "-out", str(partial), str(IDL)], check=True, capture_output=True)
        try:
            os.replace(partial, target)
        except OSError:                  # another process generated it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return target


def modules():
    path = str(generated())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("flume.ThriftSourceProtocol"), importlib.import_module("flume.ttypes")


def _protocol_factory(name: str):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    return TCompactProtocol.TCompactProtocolFactory() if name == "compact" else \
        TBinaryProtocol.TBinaryProtocolFactory()


def send(host: str, port: int, events: list[tuple[bytes, dict]], batch: int, protocol: str = "compact") -> list[str]:
    """Send ``events`` (body, headers); the Status names of the answers, in order."""
    from thrift.transport import TSocket, TTransport
    service, types = modules()
    transport = TTransport.TFramedTransport(TSocket.TSocket(host, port))
    client = service.Client(_protocol_factory(protocol).getProtocol(transport))
    transport.open()
    try:
        made = [types.ThriftFlumeEvent(headers=h, body=b) for b, h in events]
        statuses = [client.append(made[0])] if made else []
        for start in range(1, len(made), batch):
            statuses.append(client.appendBatch(made[start:start + batch]))
    finally:
        transport.close()
    return [types.Status._VALUES_TO_NAMES[s] for s in statuses]


class ApacheServer:
    def __init__(self, out: Path, protocol: str = "compact", fail_first: int = 0):
        self.out = out
        self.args = [sys.executable, str(Path(__file__).resolve()), "server", "0", protocol, str(out), str(fail_first)]
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout_s: float = 30) -> "ApacheServer":
        generated()
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        line = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line or not line[0].startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the Apache Thrift peer server did not start (printed {line!r})")
        self.port = int(line[0].split()[1])
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(15)

    def events(self) -> list[tuple[bytes, dict[str, str]]]:
        if not self.out.exists():
            return []
        events = []
        for line in self.out.read_text().splitlines():
            body, _, fields = line.partition("\t")
            headers = {}
            for pair in filter(None, fields.split(",")):
                key, _, value = pair.partition(":")
                headers[b64decode(key).decode()] = b64decode(value).decode()
            events.append((b64decode(body), headers))
        return events


def _serve(port: int, protocol: str, out: str, fail_first: int) -> None:
    from thrift.server import TServer
    from thrift.transport import TSocket, TTransport
    service, types = modules()
    lock = threading.Lock()
    left = [fail_first]

    class Handler:
        def append(self, event):
            return self.appendBatch([event])

        def appendBatch(self, events):  # noqa: N802
            with lock:
                if left[0] > 0:
                    left[0] -= 1
                    return types.Status.FAILED
                with open(out, "a") as f:
                    for e in events:
                        body = e.body if isinstance(e.body, bytes) else e.body.encode()
                        fields = ",".join(f"{b64encode(k.encode()).decode()}:{b64encode(v.encode()).decode()}"
                                          for k, v in e.headers.items())
                        f.write(f"{b64encode(body).decode()}\t{fields}\n")
            return types.Status.OK

    socket = TSocket.TServerSocket(host="127.0.0.1", port=port)
    server = TServer.TThreadedServer(service.Processor(Handler()), socket, TTransport.TFramedTransportFactory(),
                                     _protocol_factory(protocol), daemon=True)
    socket.listen()
    print(f"LISTENING {socket.handle.getsockname()[1]}", flush=True)
    socket.listen = lambda: None          # already listening: serve() would bind again
    server.serve()


if __name__ == "__main__":
    _serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
