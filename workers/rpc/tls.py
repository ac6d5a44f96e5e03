"""TLS contexts for the avro hop from Flume's keystore and truststore properties.

Flume reads Java keystores; Flumery reads the same JKS files (through pyjks) and PEM files:

* a **keystore** (server side) of type ``JKS``: its first private key entry and that key's certificate chain (the
  key is decrypted with ``keystore-password``, as Flume does); of type ``PEM``: one file holding the private key
  (unencrypted, or encrypted with ``keystore-password``) and the certificate chain;
* a **truststore** (client side) of type ``JKS``: every trusted certificate entry (and the certificates of key
  entries); of type ``PEM``: a file of CA certificates.  Without a truststore the system's CAs are trusted, as the
  JVM's default truststore is for Flume; ``trust-all-certs`` turns verification off.

As Flume's NettyAvroRpcClient, the client checks the server's certificate chain but not its host name.
``exclude-protocols`` / ``include-protocols`` take Java's names (``SSLv3``, ``TLSv1``, ``TLSv1.1``, ``TLSv1.2``,
``TLSv1.3``); SSLv2 and SSLv3 are never offered by Python.
"""
from __future__ import annotations

import os
import ssl
import tempfile
import textwrap
from base64 import b64encode

PROTOCOL_OPTIONS = {"TLSv1": "OP_NO_TLSv1", "TLSv1.1": "OP_NO_TLSv1_1", "TLSv1.2": "OP_NO_TLSv1_2",
                    "TLSv1.3": "OP_NO_TLSv1_3"}
KNOWN_PROTOCOLS = ("SSLv2Hello", "SSLv3", *PROTOCOL_OPTIONS)
STORE_TYPES = ("JKS", "PEM")


def check_protocols(value: list[str]) -> str | None:
    """An option check for ``exclude-protocols`` / ``include-protocols``."""
    unknown = [p for p in value if p not in KNOWN_PROTOCOLS]
    return f"unknown protocol {', '.join(unknown)} (known: {', '.join(KNOWN_PROTOCOLS)})" if unknown else None


class KeystoreError(OSError):
    """A keystore or truststore could not be read (wrong password, no key, not a keystore); an OSError, so that
    a source that cannot start for it is reported like one whose port is taken."""


def _pem(kind: str, der: bytes) -> str:
    body = "\n".join(textwrap.wrap(b64encode(der).decode(), 64))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def _load_jks(path: str, password: str | None):
    import jks      # pyjks; imported here so that configurations without TLS never load it
    try:
        return jks.KeyStore.load(path, password or "")
    except Exception as exc:     # pyjks raises several unrelated types for a bad file or password
        raise KeystoreError(f"cannot read JKS keystore {path}: {exc}") from None


def _jks_key_pem(path: str, password: str | None) -> str:
    store = _load_jks(path, password)
    for alias, entry in store.private_keys.items():
        if not entry.is_decrypted():
            try:
                entry.decrypt(password or "")
            except Exception as exc:
                raise KeystoreError(f"cannot decrypt key '{alias}' of {path} with the keystore password: "
                                    f"{exc}") from None
        return _pem("PRIVATE KEY", entry.pkey_pkcs8) + "".join(_pem("CERTIFICATE", der) for _, der in entry.cert_chain)
    raise KeystoreError(f"keystore {path} holds no private key entry")


def _jks_trusted_pem(path: str, password: str | None) -> str:
    store = _load_jks(path, password)
    certs = [_pem("CERTIFICATE", entry.cert) for entry in store.certs.values()]
    certs += [_pem("CERTIFICATE", der) for entry in store.private_keys.values() for _, der in entry.cert_chain]
    if not certs:
        raise KeystoreError(f"truststore {path} holds no certificate")
    return "".join(certs)


def _restrict(context: ssl.SSLContext, exclude: list[str], include: list[str]) -> None:
    for name, option in PROTOCOL_OPTIONS.items():
        if name in exclude or (include and name not in include):
            context.options |= getattr(ssl, option, 0)


def server_context(keystore: str, password: str | None, store_type: str, exclude: list[str],
                   include: list[str]) -> ssl.SSLContext:
    """The avro source's context; raises KeystoreError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _restrict(context, exclude, include)
    if store_type.upper() == "PEM":
        try:
            context.load_cert_chain(keystore, password=password or None)
        except (OSError, ssl.SSLError) as exc:
            raise KeystoreError(f"cannot load key and certificates from PEM file {keystore}: {exc}") from None
        return context
    pem = _jks_key_pem(keystore, password)
    # ssl loads keys from files only: a private file, removed at once.
    fd, path = tempfile.mkstemp(prefix="flumery-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


def client_context(truststore: str | None, password: str | None, store_type: str, trust_all: bool,
                   exclude: list[str], include: list[str]) -> ssl.SSLContext:
    """The avro sink's context; raises KeystoreError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False           # as Flume: the chain is checked, the host name is not
    _restrict(context, exclude, include)
    if trust_all:
        context.verify_mode = ssl.CERT_NONE
    elif not truststore:
        context.load_default_certs()
    elif store_type.upper() == "PEM":
        try:
            context.load_verify_locations(cafile=truststore)
        except (OSError, ssl.SSLError) as exc:
            raise KeystoreError(f"cannot load CA certificates from PEM file {truststore}: {exc}") from None
    else:
        context.load_verify_locations(cadata=_jks_trusted_pem(truststore, password))
    return context
