"""A TLS server context from what Flume's sources are configured with: a Java keystore (JKS or PKCS12), or PEM.

* PKCS12 is read with ``cryptography``.
* JKS (Java's own format, Flume's default ``keystoreType``) is read here: its layout and Sun's key-protection
  algorithm are short and fixed (``sun.security.provider.JavaKeyStore`` / ``KeyProtector``), which spares a
  dependency.  The store's integrity digest is checked with the password; the first private-key entry is used
  (Jetty, under Flume, uses the only key of the store in practice), with the store password as key password,
  as Flume does.
* PEM: a certificate chain file and a private-key file (or both in one file); ``keystorePassword`` decrypts an
  encrypted key.

``excludeProtocols`` takes Java's names (``SSLv3 TLSv1 TLSv1.1 TLSv1.2 TLSv1.3``).  TLS 1.0 and 1.1 (and SSLv3)
are never offered whatever it says (OpenSSL's security level here refuses them), so it can only narrow
TLS 1.2–1.3.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import ssl
import struct
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from core.errors import KeystoreError

KEYSTORE_TYPES = ("JKS", "PKCS12")
PROTOCOLS = ("SSLv2Hello", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_OFFERED = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

JKS_MAGIC = 0xFEEDFEED
JKS_PRIVATE_KEY, JKS_TRUSTED_CERT = 1, 2
JKS_DIGEST_SALT = b"Mighty Aphrodite"         # sic: Sun's constant, mixed into the store's integrity digest
SUN_KEY_PROTECTOR_OID = bytes.fromhex("2b060104012a02110101")   # 1.3.6.1.4.1.42.2.17.1.1


def server_context(cert_chain: list[x509.Certificate], key, exclude_protocols: list[str]) -> ssl.SSLContext:
    """A server-side context presenting ``cert_chain`` (leaf first) with ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    offered = [name for name in _OFFERED if name not in exclude_protocols]
    if not offered:
        raise KeystoreError("excludeProtocols leaves no protocol to offer (TLSv1.2 and TLSv1.3 are available)")
    context.minimum_version = _OFFERED[offered[0]]
    context.maximum_version = _OFFERED[offered[-1]]
    _load_chain(context, cert_chain, key)
    return context


def pem_context(cert_file: str, key_file: str, password: str, exclude_protocols: list[str]) -> ssl.SSLContext:
    """A server context from PEM files (``key_file`` may be empty when ``cert_file`` holds the key too)."""
    try:
        chain = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
        key_data = Path(key_file or cert_file).read_bytes()
        key = serialization.load_pem_private_key(key_data, password.encode() or None)
    except OSError as exc:
        raise KeystoreError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeystoreError(f"cannot load the PEM certificate or key: {exc}") from None
    return server_context(chain, key, exclude_protocols)


def keystore_context(path: str, password: str, kind: str, exclude_protocols: list[str]) -> ssl.SSLContext:
    """A server context from a JKS or PKCS12 keystore file."""
    key, chain = read_keystore(path, password, kind)
    return server_context(chain, key, exclude_protocols)


def read_keystore(path: str, password: str, kind: str) -> tuple[object, list[x509.Certificate]]:
    """(private key, certificate chain) of the keystore at ``path``; raises KeystoreError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    if kind.upper() == "PKCS12":
        return _read_pkcs12(data, password, path)
    return _read_jks(data, password, path)


def _read_pkcs12(data: bytes, password: str, path: str):
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode())
    except ValueError:
        raise KeystoreError(f"cannot open PKCS12 keystore {path}: wrong keystorePassword, or not PKCS12") from None
    if key is None or cert is None:
        raise KeystoreError(f"PKCS12 keystore {path} holds no private key with its certificate")
    return key, [cert, *extra]


# --- JKS ----------------------------------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise KeystoreError(f"keystore {self.path} is truncated or not a JKS keystore")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def utf(self) -> str:
        return self.take(self.u16()).decode("utf-8", "replace")

    def certificate(self, version: int) -> x509.Certificate:
        if version == 2:
            self.utf()                                  # the certificate type, "X.509"
        return x509.load_der_x509_certificate(self.take(self.u32()))


def _read_jks(data: bytes, password: str, path: str):
    secret = password.encode("utf-16-be")            # Java chars, big-endian
    body, digest = data[:-20], data[-20:]
    if len(data) < 32 or struct.unpack(">I", data[:4])[0] != JKS_MAGIC:
        raise KeystoreError(f"{path} is not a JKS keystore (set keystoreType = PKCS12 for a .p12 file)")
    if hashlib.sha1(secret + JKS_DIGEST_SALT + body).digest() != digest:
        raise KeystoreError(f"cannot open JKS keystore {path}: wrong keystorePassword (or a damaged file)")
    reader = _Reader(body, path)
    reader.take(4)
    version, count = reader.u32(), reader.u32()
    for _ in range(count):
        tag = reader.u32()
        reader.utf()                                    # alias
        reader.take(8)                                  # creation date
        if tag == JKS_PRIVATE_KEY:
            protected = reader.take(reader.u32())
            chain = [reader.certificate(version) for _ in range(reader.u32())]
            return _unprotect_key(protected, secret, path), chain
        if tag != JKS_TRUSTED_CERT:
            raise KeystoreError(f"keystore {path} holds an entry of unknown type {tag}")
        reader.certificate(version)
    raise KeystoreError(f"keystore {path} holds no private key entry")


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _unprotect_key(encrypted_info: bytes, secret: bytes, path: str):
    """Sun's KeyProtector: the PKCS#8 key XOR a SHA-1 keystream seeded by a salt, then a SHA-1 check."""
    try:
        _, outer, _ = _der(encrypted_info, 0)                 # EncryptedPrivateKeyInfo ::= SEQUENCE {
        _, algorithm, algorithm_end = _der(encrypted_info, outer)          # AlgorithmIdentifier,
        _, oid, oid_end = _der(encrypted_info, algorithm)
        tag, start, end = _der(encrypted_info, algorithm_end)              # encryptedData OCTET STRING }
    except IndexError:
        raise KeystoreError(f"keystore {path}: a private key entry is malformed") from None
    if encrypted_info[oid:oid_end] != SUN_KEY_PROTECTOR_OID or tag != 0x04:
        raise KeystoreError(f"keystore {path}: the private key is protected by an unknown algorithm")
    protected = encrypted_info[start:end]
    salt, cipher, check = protected[:20], protected[20:-20], protected[-20:]
    stream, block = bytearray(), salt
    while len(stream) < len(cipher):
        block = hashlib.sha1(secret + block).digest()
        stream += block
    plain = bytes(c ^ k for c, k in zip(cipher, stream))
    if hashlib.sha1(secret + plain).digest() != check:
        raise KeystoreError(f"keystore {path}: the private key's password differs from keystorePassword")
    try:
        return serialization.load_der_private_key(plain, None)
    except ValueError as exc:
        raise KeystoreError(f"keystore {path}: cannot load the private key: {exc}") from None


# --- handing the key to the ssl module ----------------------------------------------------------------------

def _load_chain(context: ssl.SSLContext, chain: list[x509.Certificate], key) -> None:
    """``ssl`` reads keys only from files: write the chain and the key, encrypted with a one-time passphrase,
    to a private temporary directory, load them, and delete them."""
    passphrase = secrets.token_bytes(32)
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(passphrase))
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    with tempfile.TemporaryDirectory(prefix="flumery-tls-") as directory:    # mode 0700
        cert_path, key_path = os.path.join(directory, "chain.pem"), os.path.join(directory, "key.pem")
        for path, data in ((cert_path, pem_chain), (key_path, pem_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        try:
            context.load_cert_chain(cert_path, key_path, password=passphrase)
        except ssl.SSLError as exc:
            raise KeystoreError(f"the certificate does not match the private key: {exc.reason}") from None
