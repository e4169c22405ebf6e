"""Encryption and authentication of what the TLS layer puts in a shared cache.

A serialized ``SSL_SESSION`` holds the session's master secret; a ticket key
ring holds the keys that protect every ticket.  Neither may be readable by
whoever can read the cache, nor plantable by whoever can write it.  Each blob
is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from a secret
file shared by the farm; the associated data binds the blob to what it is (a
session or a key ring), to its cache key and to the session id context, so a
blob moved to another key or read by a server of another farm fails to open.

Blob layout: ``0x01`` (format version) | 12-byte random nonce | ciphertext+tag.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigError, SessionBlobError

__all__ = ["Sealer", "generate_key_file", "load_key_file"]

FORMAT = 1
NONCE_LEN = 12
MIN_SECRET = 16
_HEX = re.compile(rb"^[0-9a-fA-F]+$")


def load_key_file(path: str | os.PathLike[str]) -> bytes:
    """The shared secret in ``path``: raw bytes, or hex text (``openssl rand -hex 32``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the cache key file {path}: {exc.strerror or exc} (create it once with "
                          f"`hoard tls --gen-key {path}` and copy it to every server of the farm)") from None
    text = data.strip()
    if _HEX.match(text) and len(text) % 2 == 0 and len(text) >= 2 * MIN_SECRET:
        data = bytes.fromhex(text.decode("ascii"))
    if len(data) < MIN_SECRET:
        raise ConfigError(f"the cache key file {path} holds {len(data)} bytes; at least {MIN_SECRET} "
                          "are needed (create one with `hoard tls --gen-key FILE` or `openssl rand -out FILE 32`)")
    return data


def generate_key_file(path: str | os.PathLike[str]) -> None:
    """Write 32 random bytes to a new file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))


class Sealer:
    """Seal/open cache blobs with a key derived from the farm's shared secret."""

    def __init__(self, secret: bytes, context: bytes = b"") -> None:
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"a cache encryption secret needs at least {MIN_SECRET} bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"scatterhoard tls cache v1").derive(secret)
        self._aead = AESGCM(key)
        self.context = context
        self._prefixes: dict[tuple[bytes, bytes], bytes] = {}

    def _aad(self, kind: bytes, key: bytes) -> bytes:
        """``len|"hoard-tls"|len|kind|len|context|len|key`` (the fixed part made once per kind)."""
        prefix = self._prefixes.get((kind, self.context))
        if prefix is None:
            parts = (b"hoard-tls", kind, self.context)
            prefix = self._prefixes[kind, self.context] = b"".join(len(p).to_bytes(2, "big") + p for p in parts)
        return prefix + len(key).to_bytes(2, "big") + key

    def seal(self, kind: bytes, key: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return bytes([FORMAT]) + nonce + self._aead.encrypt(nonce, plaintext, self._aad(kind, key))

    def open(self, kind: bytes, key: bytes, blob: bytes) -> bytes:
        """The plaintext, or :class:`SessionBlobError` when the blob is not ours or was altered."""
        if len(blob) < 1 + NONCE_LEN + 16 or blob[0] != FORMAT:
            raise SessionBlobError("cache blob has an unknown format")
        nonce = blob[1 : 1 + NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_LEN :], self._aad(kind, key))
        except InvalidTag:
            raise SessionBlobError("cache blob failed authentication (wrong key, other farm, "
                                   "or tampered)") from None
