"""The client side of TLS for the RPC sinks (avro, thrift): Flume's truststore properties.

The sources' side (keystores) is the sources' shared :mod:`workers.sources.keystore`, as for the http and syslog
sources.  A sink trusts:

* the certificates of a **truststore** of type ``JKS`` (Flume's default: every trusted-certificate entry and the
  certificates of key entries; the store's integrity digest is checked when ``truststore-password`` is given, as
  Java's keytool does), ``PKCS12`` (read with ``cryptography``), or ``PEM`` (a file of CA certificates);
* without a truststore, the system's CAs (as the JVM's default truststore does for Flume);
* anything, with ``trust-all-certs``.

As Flume's NettyAvroRpcClient, the client checks the server's certificate chain but not its host name.  TLS 1.2
and 1.3 are offered (``exclude-protocols`` / ``include-protocols`` take Java's names and can only narrow that).
"""
from __future__ import annotations

import hashlib
import ssl
import struct
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from core.errors import KeystoreError

STORE_TYPES = ("JKS", "PKCS12", "PEM")
PROTOCOLS = ("SSLv2Hello", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_OFFERED = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
JKS_MAGIC = 0xFEEDFEED
JKS_PRIVATE_KEY, JKS_TRUSTED_CERT = 1, 2
JKS_DIGEST_SALT = b"Mighty Aphrodite"         # Sun's constant, mixed into the store's integrity digest


def check_protocols(value: list[str]) -> str | None:
    """An option check for ``exclude-protocols`` / ``include-protocols``."""
    unknown = [p for p in value if p not in PROTOCOLS]
    return f"unknown protocol '{unknown[0]}' (known: {', '.join(PROTOCOLS)})" if unknown else None


def client_context(truststore: str, password: str, store_type: str, trust_all: bool, exclude: list[str],
                   include: list[str]) -> ssl.SSLContext:
    """The sink's context; raises KeystoreError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False           # as Flume: the chain is checked, the host name is not
    offered = [name for name in _OFFERED if name not in exclude and (not include or name in include)]
    if not offered:
        raise KeystoreError("exclude-protocols/include-protocols leave no protocol (TLSv1.2 and TLSv1.3 are "
                            "available)")
    context.minimum_version, context.maximum_version = _OFFERED[offered[0]], _OFFERED[offered[-1]]
    if trust_all:
        context.verify_mode = ssl.CERT_NONE
    elif not truststore:
        context.load_default_certs()
    else:
        try:
            context.load_verify_locations(cadata=trusted_pem(truststore, password, store_type))
        except ssl.SSLError as exc:
            raise KeystoreError(f"cannot use the certificates of truststore {truststore}: {exc}") from None
    return context


def trusted_pem(path: str, password: str, store_type: str) -> str:
    """The certificates a truststore holds, as PEM text; raises KeystoreError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read truststore {path}: {exc.strerror}") from None
    kind = store_type.upper()
    if kind == "PEM":
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise KeystoreError(f"truststore {path} holds no PEM certificate")
        return data.decode("ascii", "replace")
    ders = _pkcs12_certificates(data, password, path) if kind == "PKCS12" else _jks_certificates(data, password,
                                                                                                 path)
    if not ders:
        raise KeystoreError(f"truststore {path} holds no certificate")
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders)


def _pkcs12_certificates(data: bytes, password: str, path: str) -> list[bytes]:
    try:
        store = pkcs12.load_pkcs12(data, password.encode() or None)
    except ValueError:
        raise KeystoreError(f"cannot open PKCS12 truststore {path}: wrong truststore-password, or not PKCS12") \
            from None
    certs = [store.cert.certificate] if store.cert else []
    certs += [c.certificate for c in store.additional_certs]
    return [c.public_bytes(Encoding.DER) for c in certs]


def _jks_certificates(data: bytes, password: str, path: str) -> list[bytes]:
    """Every certificate of a JKS store (trusted entries and key entries' chains), DER."""
    if len(data) < 32 or struct.unpack(">I", data[:4])[0] != JKS_MAGIC:
        raise KeystoreError(f"{path} is not a JKS truststore (set truststore-type = PKCS12 or PEM)")
    body, digest = data[:-20], data[-20:]
    if password and hashlib.sha1(password.encode("utf-16-be") + JKS_DIGEST_SALT + body).digest() != digest:
        raise KeystoreError(f"cannot open JKS truststore {path}: wrong truststore-password (or a damaged file)")
    pos = 4

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(body):
            raise KeystoreError(f"truststore {path} is truncated or not a JKS store")
        pos += n
        return body[pos - n:pos]

    def u32() -> int:
        return struct.unpack(">I", take(4))[0]

    def certificate() -> bytes:
        if version == 2:
            take(struct.unpack(">H", take(2))[0])        # the certificate type, "X.509"
        return take(u32())

    version, count, certs = u32(), u32(), []
    for _ in range(count):
        tag = u32()
        take(struct.unpack(">H", take(2))[0])            # alias
        take(8)                                          # creation date
        if tag == JKS_PRIVATE_KEY:
            take(u32())                                  # the protected key: not needed to trust
            certs += [certificate() for _ in range(u32())]
        elif tag == JKS_TRUSTED_CERT:
            certs.append(certificate())
        else:
            raise KeystoreError(f"truststore {path} holds an entry of unknown type {tag}")
    return certs
