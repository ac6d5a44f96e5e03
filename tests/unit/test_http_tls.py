"""The http source's TLS (Flume's ssl, keystore, keystorePassword, keystoreType, excludeProtocols; PEM files) and
its optional authentication (authToken, authUser/authPassword): real handshakes on real sockets, certificates made
by the test (``cryptography``; a JKS keystore by Java's ``keytool``).  The channel processor is a fake."""
from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import shutil
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from test_http_handler import make_source
from test_http_server import EVENT, Client, post_head

from core.config import build_config
from workers.sources.http import HttpSource
from workers.sources.keystore import read_keystore

PASSWORD = "s3cret-store"


@pytest.fixture(scope="module")
def identity():
    """A self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flumery-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture
def pem_files(tmp_path, identity):
    key, cert = identity
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def serve():
    started = []

    def start(**props):
        source, processor, counters = make_source(**props)
        source.start()
        started.append(source)
        return source, processor, counters
    yield start
    for source in started:
        source.stop()


def client_context(cert_file, **versions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert_file))
    for attribute, version in versions.items():
        setattr(context, attribute, version)
    return context


def https_post(port: int, context: ssl.SSLContext, body: bytes = EVENT, headers: dict | None = None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("WWW-Authenticate")
    finally:
        conn.close()


def build_errors(**props) -> list[str]:
    _, errors, _ = build_config(HttpSource, {"port": "0", **props}, "a1.sources.r1.")
    return [str(e) for e in errors]


# --- TLS ------------------------------------------------------------------------------------------------------

def test_https_with_pem_files(serve, pem_files):
    cert_file, key_file = pem_files
    source, processor, _ = serve(ssl="true", sslCertFile=str(cert_file), sslKeyFile=str(key_file))
    status, body, _ = https_post(source.port, client_context(cert_file))
    assert (status, body) == (200, b"OK\n")
    assert [e.body for e in processor.batches[0]] == [b"ok"]


def test_plain_http_to_a_tls_port_is_not_served(serve, pem_files):
    cert_file, key_file = pem_files
    source, processor, _ = serve(ssl="true", sslCertFile=str(cert_file), sslKeyFile=str(key_file))
    client = Client(source.port).send(post_head(len(EVENT)) + EVENT)
    assert client.response() is None                      # the handshake fails: closed, nothing answered
    client.close()
    assert processor.batches == []


def test_https_with_pkcs12_keystore(serve, tmp_path, identity, pem_files):
    key, cert = identity
    store = tmp_path / "server.p12"
    store.write_bytes(pkcs12.serialize_key_and_certificates(
        b"flumery", key, cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())))
    source, processor, _ = serve(ssl="true", keystore=str(store), keystorePassword=PASSWORD,
                                 keystoreType="PKCS12")
    assert https_post(source.port, client_context(pem_files[0]))[0] == 200
    assert len(processor.batches) == 1


@pytest.fixture(scope="module")
def jks(tmp_path_factory):
    """A JKS keystore made by Java's keytool (RSA key, certificate for 127.0.0.1), and its certificate as PEM."""
    keytool = shutil.which("keytool")
    if keytool is None:
        pytest.skip("Java's keytool is not installed (Debian openjdk-17-jre-headless)")
    directory = tmp_path_factory.mktemp("jks")
    store = directory / "server.jks"
    subprocess.run([keytool, "-genkeypair", "-keystore", str(store), "-storetype", "JKS", "-storepass", PASSWORD,
                    "-keypass", PASSWORD, "-alias", "flumery", "-keyalg", "RSA", "-keysize", "2048",
                    "-dname", "CN=flumery-test", "-ext", "SAN=ip:127.0.0.1", "-validity", "2"],
                   check=True, capture_output=True)
    _, chain = read_keystore(str(store), PASSWORD, "JKS")
    cert_file = directory / "cert.pem"
    cert_file.write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    return store, cert_file


def test_https_with_jks_keystore_made_by_keytool(serve, jks):
    store, cert_file = jks
    source, processor, _ = serve(ssl="true", keystore=str(store), keystorePassword=PASSWORD)   # JKS: the default
    assert https_post(source.port, client_context(cert_file))[0] == 200
    assert len(processor.batches) == 1


def test_wrong_keystore_password_is_a_config_error_without_the_password(jks):
    store, _ = jks
    errors = build_errors(ssl="true", keystore=str(store), keystorePassword="not-the-password")
    assert len(errors) == 1
    assert errors[0].startswith("a1.sources.r1.keystore: ") and "wrong keystorePassword" in errors[0]
    assert "not-the-password" not in errors[0]


def test_pkcs12_store_read_as_jks_says_so(tmp_path, identity):
    key, cert = identity
    store = tmp_path / "server.p12"
    store.write_bytes(pkcs12.serialize_key_and_certificates(
        b"flumery", key, cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())))
    errors = build_errors(ssl="true", keystore=str(store), keystorePassword=PASSWORD)
    assert errors == [f"a1.sources.r1.keystore: {store} is not a JKS keystore (set keystoreType = PKCS12 for a "
                      f".p12 file)"]


@pytest.mark.parametrize("props,expected", [
    ({"ssl": "true"}, "a1.sources.r1.ssl: true needs keystore (or sslCertFile and sslKeyFile)"),
    ({"ssl": "true", "keystore": "/nonexistent.jks"},
     "a1.sources.r1.keystore: cannot read keystore /nonexistent.jks: No such file or directory"),
    ({"keystoreType": "JCEKS"}, "a1.sources.r1.keystoreType: must be one of JKS, PKCS12; did you mean 'JKS'? "
     "(got 'JCEKS')"),
    ({"excludeProtocols": "SSLv3 TLSv1.4"}, "a1.sources.r1.excludeProtocols: unknown protocol 'TLSv1.4' (known: "
     "SSLv2Hello, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3); did you mean 'TLSv1.3'? (got 'SSLv3 TLSv1.4')"),
    ({"authUser": "flume"}, "a1.sources.r1.authPassword: required when authUser is set"),
])
def test_tls_and_auth_config_errors_name_the_key(props, expected):
    assert build_errors(**props) == [expected]


def test_exclude_protocols_narrows_the_handshake(serve, pem_files):
    cert_file, key_file = pem_files
    source, _, _ = serve(ssl="true", sslCertFile=str(cert_file), sslKeyFile=str(key_file),
                         excludeProtocols="SSLv3 TLSv1 TLSv1.1 TLSv1.2")
    assert https_post(source.port, client_context(cert_file))[0] == 200
    only_12 = client_context(cert_file, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        https_post(source.port, only_12)


def test_a_silent_client_cannot_hold_the_handshake(serve, pem_files):
    cert_file, key_file = pem_files
    source, _, _ = serve(ssl="true", sslCertFile=str(cert_file), sslKeyFile=str(key_file),
                         requestTimeoutSeconds="0.5")
    with socket.create_connection(("127.0.0.1", source.port), timeout=10) as silent:
        assert silent.recv(100) == b""                    # no ClientHello: closed after requestTimeoutSeconds


# --- authentication --------------------------------------------------------------------------------------------

def test_token_is_required_when_configured(serve):
    source, processor, _ = serve(authToken="t0ken")
    client = Client(source.port).send(post_head(len(EVENT)) + EVENT)
    status, headers, _ = client.response()
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    client.close()
    wrong = Client(source.port).send(post_head(len(EVENT), "Authorization: Bearer t0ke\r\n") + EVENT)
    assert wrong.response()[0] == 401
    wrong.close()
    right = Client(source.port).send(post_head(len(EVENT), "Authorization: Bearer t0ken\r\n") + EVENT)
    assert right.response()[0] == 200
    right.close()
    assert len(processor.batches) == 1


def test_unauthenticated_body_is_never_read_as_a_request(serve):
    source, processor, _ = serve(authToken="t0ken")
    client = Client(source.port).send(post_head(len(EVENT) + 1000))
    status, headers, _ = client.response()
    assert status == 401 and headers.get("connection") == "close"
    client.send(post_head(len(EVENT), "Authorization: Bearer t0ken\r\n") + EVENT)    # smuggled in the body
    assert client.response() is None
    client.close()
    assert processor.batches == []


def test_basic_auth_over_https(serve, pem_files):
    cert_file, key_file = pem_files
    source, processor, _ = serve(ssl="true", sslCertFile=str(cert_file), sslKeyFile=str(key_file),
                                 authUser="flume", authPassword="pa:ss")
    context = client_context(cert_file)
    status, _, challenge = https_post(source.port, context)
    assert status == 401 and challenge.startswith("Basic")
    bad = base64.b64encode(b"flume:wrong").decode()
    assert https_post(source.port, context, headers={"Authorization": f"Basic {bad}"})[0] == 401
    good = base64.b64encode(b"flume:pa:ss").decode()
    assert https_post(source.port, context, headers={"Authorization": f"Basic {good}"})[0] == 200
    assert len(processor.batches) == 1
