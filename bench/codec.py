"""What the payload codec costs one incident: encrypt and decrypt time, and bytes.

Each committed replay history (tests/histories/*.json, real incidents recorded on the dev
server) is read, every payload the SDK would pass through the codec is collected (inputs,
results, signals, updates, markers, memo, headers, failure details; not search attributes,
which Temporal indexes in the clear), and the product's codec (`remedy.temporal.payload_codec`,
a fresh AES-256 key) encrypts and then decrypts them all, `--rounds` times. The figures are
per incident: the median over the rounds, the payload count, and the history's size with
its payloads plain and encrypted.

    .venv/bin/python bench/codec.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.client import WorkflowHistory

from remedy.codec import EncryptionCodec
from remedy.config import CodecConfig
from remedy.temporal import payload_codec

HISTORIES = Path(__file__).resolve().parents[1] / "tests" / "histories"
KEYS_ENV = "BENCH_CODEC_KEYS"


def payloads_in(message: Message) -> list[Payload]:
    """Every Payload under `message`, search attributes left out, in field order."""
    if isinstance(message, Payload):
        return [message]
    if isinstance(message, SearchAttributes):
        return []
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            inner = list(value.values())
            if inner and isinstance(inner[0], Message):
                for item in inner:
                    found += payloads_in(item)
        elif field.is_repeated:
            for item in value:
                found += payloads_in(item)
        else:
            found += payloads_in(value)
    return found


def _millis(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def measure(name: str, text: str, codec: EncryptionCodec, rounds: int) -> dict[str, str]:
    history = WorkflowHistory.from_json(name, json.loads(text))
    plain_history = history.to_json()
    events = history.events
    payloads = [p for event in events for p in payloads_in(event)]
    plain_bytes = sum(p.ByteSize() for p in payloads)
    encode_s: list[float] = []
    decode_s: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        sealed = await codec.encode(payloads)
        encoded = time.perf_counter()
        opened = await codec.decode(sealed)
        decoded = time.perf_counter()
        assert opened == payloads
        encode_s.append(encoded - started)
        decode_s.append(decoded - encoded)
    for original, replacement in zip(payloads, sealed, strict=True):
        original.CopyFrom(replacement)  # the history as Temporal would store it
    return {
        "incident": name,
        "payloads": str(len(payloads)),
        "encrypt": _millis(statistics.median(encode_s)),
        "decrypt": _millis(statistics.median(decode_s)),
        "payload bytes": f"{plain_bytes:,} -> {sum(p.ByteSize() for p in sealed):,}",
        "history JSON": f"{len(plain_history):,} -> {len(history.to_json()):,}",
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    os.environ[KEYS_ENV] = "bench:" + base64.b64encode(os.urandom(32)).decode()
    codec = payload_codec(CodecConfig(enabled=True, keys_env=KEYS_ENV))
    assert codec is not None
    histories = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("*.json"))}
    rows = [await measure(name, text, codec, args.rounds) for name, text in histories.items()]
    headers = list(rows[0])
    print(f"| {' | '.join(headers)} |")
    print(f"| {' | '.join('---' for _ in headers)} |")
    for row in rows:
        print(f"| {' | '.join(row[h] for h in headers)} |")
    print(
        f"\n{args.rounds} rounds each; Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
