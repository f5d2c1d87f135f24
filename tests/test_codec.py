"""The payload codec: encryption, key rotation, tampering, plaintext histories, key errors."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.worker import Replayer

from remedy.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecDecodeError,
    CodecKeyError,
    EncryptionCodec,
    parse_keys,
)
from remedy.config import CodecConfig, ConfigError, RemedyConfig, load_config
from remedy.models import ErrorEvent, ErrorInfo
from remedy.temporal import connect_options, data_converter
from workflows.incident import IncidentWorkflow

ENV = "TEST_CODEC_KEYS"
PLANTED = "PLANTED-card-4111-1111"
HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def codec_for(keys: str) -> EncryptionCodec:
    return EncryptionCodec(parse_keys(keys, ENV), ENV)


def plain_payload(text: str = PLANTED) -> Payload:
    [payload] = pydantic_data_converter.payload_converter.to_payloads(
        [
            ErrorEvent(
                service="shop",
                error=ErrorInfo(type="KeyError", message=text),
                traceback=f"Traceback (most recent call last):\nKeyError: {text!r}\n",
            )
        ]
    )
    return payload


async def test_a_payload_round_trips_and_its_bytes_hold_no_plaintext() -> None:
    codec = codec_for(f"k1:{new_key()}")
    original = plain_payload()

    [sealed] = await codec.encode([original])
    [again] = await codec.encode([original])

    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"k1"
    assert PLANTED.encode() not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString(), "the metadata is sealed too"
    assert sealed.data != again.data, "a fresh nonce per payload"
    assert await codec.decode([sealed]) == [original]


async def test_after_rotation_old_payloads_decode_and_new_ones_use_the_new_key() -> None:
    old_key, new = new_key(), new_key()
    [written_before] = await codec_for(f"k1:{old_key}").encode([plain_payload()])

    rotated = codec_for(f"k2:{new},k1:{old_key}")
    [written_after] = await rotated.encode([plain_payload()])

    assert written_after.metadata[KEY_ID_METADATA] == b"k2"
    assert await rotated.decode([written_before, written_after]) == [plain_payload()] * 2
    # Dropping the old key too early is an error that says which key is missing.
    with pytest.raises(CodecDecodeError, match="key id 'k1'") as missing:
        await codec_for(f"k2:{new}").decode([written_before])
    assert old_key not in str(missing.value) and new not in str(missing.value)


async def test_tampered_ciphertext_or_key_id_fails_naming_the_key_id_not_the_key() -> None:
    key, other = new_key(), new_key()
    codec = codec_for(f"k1:{key},k2:{other}")
    [sealed] = await codec.encode([plain_payload()])

    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_METADATA] = b"k2"
    truncated = Payload()
    truncated.CopyFrom(sealed)
    truncated.data = sealed.data[:5]

    for bad, key_id in ((flipped, "k1"), (relabelled, "k2"), (truncated, "k1")):
        with pytest.raises(CodecDecodeError, match=f"key id '{key_id}'") as failure:
            await codec.decode([bad])
        assert key not in str(failure.value) and other not in str(failure.value)
    # The same id holding a different key reads as a wrong key, not as success.
    with pytest.raises(CodecDecodeError, match="does not decrypt"):
        await codec_for(f"k1:{other}").decode([sealed])


async def test_plaintext_payloads_pass_through_decode() -> None:
    codec = codec_for(f"k1:{new_key()}")
    plain = plain_payload()
    assert await codec.decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "TEST_CODEC_KEYS is unset or empty"),
        ("nocolon", "entry 1 is not 'id:base64key'"),
        ("k1:***", "entry 1 (key id 'k1'): the key is not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "the key is 5 bytes, AES-256 needs 32"),
        ("bad id:AAAA", "entry 1: the key id must be"),
        ("k1:{k},k1:{k}", "entry 2: key id 'k1' appears twice"),
    ],
)
def test_unreadable_keys_are_refused_naming_the_variable_and_entry(value: str, says: str) -> None:
    value = value.replace("{k}", new_key())
    with pytest.raises(CodecKeyError) as refused:
        parse_keys(value, ENV)
    assert says in str(refused.value)
    assert str(refused.value).startswith(ENV)


def test_a_bad_key_in_the_environment_is_one_config_line_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "remedy.toml"
    path.write_text('[codec]\nenabled = true\nkeys_env = "TEST_CODEC_KEYS"\n')
    secret_looking = base64.b64encode(b"x" * 31).decode()
    monkeypatch.setenv(ENV, f"prod-2026:{secret_looking}")

    with pytest.raises(ConfigError) as refused:
        load_config(path)

    message = str(refused.value)
    assert "\n" not in message and "TEST_CODEC_KEYS" in message and "'prod-2026'" in message
    assert secret_looking not in message
    monkeypatch.setenv(ENV, f"prod-2026:{new_key()}")
    assert load_config(path).codec.enabled


def test_the_product_converter_encrypts_only_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, f"k1:{new_key()}")
    off = RemedyConfig()
    on = RemedyConfig(codec=CodecConfig(enabled=True, keys_env=ENV))

    assert data_converter(off) is pydantic_data_converter
    converter = connect_options(on)["data_converter"]
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    # Tests and replayers built without a config follow REMEDY_* variables.
    monkeypatch.setenv("REMEDY_CODEC__ENABLED", "true")
    monkeypatch.setenv("REMEDY_CODEC__KEYS_ENV", ENV)
    assert isinstance(data_converter().payload_codec, EncryptionCodec)


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_plaintext_histories_replay_with_the_codec_on(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, f"k1:{new_key()}")
    converter = data_converter(RemedyConfig(codec=CodecConfig(enabled=True, keys_env=ENV)))
    history = WorkflowHistory.from_json(f"replay-{name}", json.loads(HISTORIES[name]))
    await Replayer(workflows=[IncidentWorkflow], data_converter=converter).replay_workflow(history)
