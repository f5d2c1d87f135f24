"""Encrypted history: a Temporal payload codec doing AES-256-GCM with keys from the environment.

Everything an incident carries through Temporal (error messages, tracebacks, evidence,
diagnoses, failure messages) is a payload; encoded here, the Temporal database and Temporal
Cloud hold only ciphertext, and only processes holding the keys (workers, the intake, the CLI,
`remedy codec-server`) read it. The keys variable holds `id:base64key,...`: the first key
encrypts, every key decrypts, so a new key goes first and the old ones stay until no history
needs them (docs/codec.md). The key id travels in the payload's metadata and is bound to the
ciphertext as associated data, so a relabelled payload fails like a tampered one.

A payload without the encrypted encoding passes through on decode: histories written before
the codec was switched on keep replaying.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size; random per payload
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NEW_KEY_HINT = "openssl rand -base64 32"


class CodecKeyError(ValueError):
    """The keys variable cannot be read; the message names the variable and the entry, never a
    key's bytes."""


class CodecDecodeError(ValueError):
    """A payload cannot be decrypted; the message names the key id, never the key."""


@dataclass(frozen=True)
class KeyRing:
    """Keys by id, in the order the variable lists them; the first one encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    @property
    def ids(self) -> list[str]:
        return [key_id for key_id, _ in self.keys]


def parse_keys(text: str | None, env_name: str) -> KeyRing:
    """`id1:base64key,id2:base64key` as the variable `env_name` holds it."""
    if not text or not text.strip():
        raise CodecKeyError(
            f"{env_name} is unset or empty ([codec] enabled needs 'id:base64key', "
            f"a key from `{NEW_KEY_HINT}`)"
        )
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate(text.split(","), start=1):
        key_id, sep, encoded = entry.strip().partition(":")
        where = f"{env_name}: entry {position}"
        if not sep:
            raise CodecKeyError(f"{where} is not 'id:base64key'")
        if not KEY_ID_PATTERN.match(key_id):
            raise CodecKeyError(
                f"{where}: the key id must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if key_id in dict(keys):
            raise CodecKeyError(f"{where}: key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CodecKeyError(f"{where} (key id {key_id!r}): the key is not base64") from None
        if len(key) != KEY_BYTES:
            raise CodecKeyError(
                f"{where} (key id {key_id!r}): the key is {len(key)} bytes, AES-256 needs "
                f"{KEY_BYTES} (`{NEW_KEY_HINT}`)"
            )
        keys.append((key_id, key))
    return KeyRing(tuple(keys))


def keys_from_environment(env_name: str) -> KeyRing:
    return parse_keys(os.environ.get(env_name), env_name)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole payload (metadata included), as Temporal's docs advise."""

    def __init__(self, ring: KeyRing, env_name: str) -> None:
        super().__init__()
        self._env_name = env_name
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys}
        self._current_id = ring.current_id

    @property
    def key_id(self) -> str:
        """The id new payloads are encrypted under."""
        return self._current_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._current_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before the codec was on, or never encrypted
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(repr(i) for i in self._ciphers)
            raise CodecDecodeError(
                f"payload encrypted under key id {key_id!r}, which {self._env_name} does not "
                f"hold (it holds {known}); add that key back after the current one"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except (InvalidTag, ValueError):  # ValueError: data too short to hold a nonce
            raise CodecDecodeError(
                f"payload under key id {key_id!r} does not decrypt: it was altered, or "
                f"{self._env_name} holds a different key under that id"
            ) from None
        return Payload.FromString(plain)
