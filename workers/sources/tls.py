"""Server-side TLS for sources from Flume's keystore properties (``ssl``, ``keystore``, ``keystore-password``,
``keystore-type``, ``include-protocols``, ``exclude-protocols``), on Python's ``ssl`` module.

``keystore-type``: ``JKS`` (Flume's default; read with pyjks), ``PKCS12`` (read with ``cryptography``), or ``PEM``
(Flumery: one file holding the private key and its certificate chain; ``keystore-password`` decrypts the key if it
is encrypted).  The keystore must hold one private key entry (its certificate chain is what the server presents).
Java keeps keys in memory; ``ssl`` loads them from a file, so JKS and PKCS12 keys are written as PEM to a private
temporary file (mode 0600) that is deleted as soon as it was loaded.

Protocols are Java's names (``TLSv1``, ``TLSv1.1``, ``TLSv1.2``, ``TLSv1.3``; ``SSLv3`` and ``SSLv2Hello`` are never
offered by Python, so excluding them, Flume's default, changes nothing).
"""
from __future__ import annotations

import base64
import os
import ssl
import tempfile

import jks
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

PROTOCOLS = {"TLSv1": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2", "TLSv1.3": "TLSv1_3"}
NEVER_OFFERED = {"SSLv2Hello", "SSLv3", "SSLv2"}
KEYSTORE_TYPES = ("JKS", "PKCS12", "PEM")


class KeystoreError(ValueError):
    """The keystore cannot be read or holds no usable key."""


def check_protocols(value: list[str]) -> str | None:
    unknown = [p for p in value if p not in PROTOCOLS and p not in NEVER_OFFERED]
    return f"unknown protocol {', '.join(unknown)} (known: {', '.join(PROTOCOLS)})" if unknown else None


def server_context(keystore: str, password: str | None, keystore_type: str, include: list[str],
                   exclude: list[str]) -> ssl.SSLContext:
    """An SSLContext presenting the keystore's key and chain; raises KeystoreError (or OSError) if it cannot."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_protocols(context, include, exclude)
    kind = keystore_type.upper()
    if kind == "PEM":
        try:
            context.load_cert_chain(keystore, password=password or None)
        except ssl.SSLError as exc:
            raise KeystoreError(f"cannot load the key and certificate of PEM keystore {keystore}: {exc}") from None
        return context
    key_pem, chain_pem = _read_jks(keystore, password) if kind == "JKS" else _read_pkcs12(keystore, password)
    with tempfile.TemporaryDirectory(prefix="flumery-tls-") as folder:
        path = os.path.join(folder, "key.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem + chain_pem)
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise KeystoreError(f"the key of {kind} keystore {keystore} does not load: {exc}") from None
    return context


def _set_protocols(context: ssl.SSLContext, include: list[str], exclude: list[str]) -> None:
    allowed = [p for p in PROTOCOLS if (not include or p in include) and p not in exclude]
    if not allowed:
        raise KeystoreError("include-protocols and exclude-protocols leave no TLS protocol")
    # Leave the bounds at OpenSSL's defaults unless asked: naming TLSv1 or TLSv1.1 is deprecated in Python.
    if allowed[0] != "TLSv1":
        context.minimum_version = getattr(ssl.TLSVersion, PROTOCOLS[allowed[0]])
    if allowed[-1] != "TLSv1.3":
        context.maximum_version = getattr(ssl.TLSVersion, PROTOCOLS[allowed[-1]])


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN " + label.encode() + b"-----\n" + b"\n".join(lines) + b"\n-----END " + label.encode() + b"-----\n"


def _read_jks(path: str, password: str | None) -> tuple[bytes, bytes]:
    try:
        store = jks.KeyStore.load(path, password or "")
    except (jks.util.KeystoreSignatureException, jks.util.BadKeystoreFormatException,
            jks.util.DecryptionFailureException) as exc:
        raise KeystoreError(f"cannot read JKS keystore {path}: {exc}") from None
    entries = list(store.private_keys.values())
    if len(entries) != 1:
        raise KeystoreError(f"JKS keystore {path} holds {len(entries)} private keys; Flumery needs exactly one")
    entry = entries[0]
    if not entry.is_decrypted():
        entry.decrypt(password or "")
    key = _pem("PRIVATE KEY", entry.pkey_pkcs8)
    return key, b"".join(_pem("CERTIFICATE", der) for _kind, der in entry.cert_chain)


def _read_pkcs12(path: str, password: str | None) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except ValueError as exc:
        raise KeystoreError(f"cannot read PKCS12 keystore {path}: {exc}") from None
    if key is None or cert is None:
        raise KeystoreError(f"PKCS12 keystore {path} holds no private key with its certificate")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    chain = [cert, *(extra or [])]
    return key_pem, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
