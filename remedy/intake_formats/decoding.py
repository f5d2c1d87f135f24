"""Content-Encoding undone within a size budget: a compressed bomb is refused as soon as its
output passes the limit, before the rest of it is inflated."""

from __future__ import annotations

import zlib

import brotli

from remedy.intake_formats.report import Rejected

# More layers than this is not a real sender; each layer is capped anyway.
MAX_ENCODINGS = 3


def _too_large(limit: int) -> Rejected:
    return Rejected(413, f"body exceeds the {limit}-byte limit once decompressed")


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise Rejected(400, f"body is not valid {name} data ({exc})") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise Rejected(400, f"body: the {name} data ends early")
        rest = inflater.unused_data
        # gzip allows members one after another; zlib and raw deflate end at their end.
        if not rest or name != "gzip":
            break
    if rest:
        raise Rejected(400, f"body: bytes after the end of the {name} data")
    return bytes(out)


def _deflate(data: bytes, limit: int) -> bytes:
    # "deflate" is zlib-wrapped by the standard, raw deflate by some senders: the header says.
    wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return _inflate(data, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, limit, "deflate")


def _unbrotli(data: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        out = decompressor.process(data, output_buffer_limit=limit + 1)
        # At the output limit the decompressor keeps input back; it is asked for more only
        # while the budget has room.
        while (
            len(out) <= limit
            and not decompressor.is_finished()
            and not decompressor.can_accept_more_data()
        ):
            out += decompressor.process(b"", output_buffer_limit=limit + 1 - len(out))
    except brotli.error as exc:
        raise Rejected(400, f"body is not valid br data ({exc})") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not decompressor.is_finished():
        raise Rejected(400, "body: the br data ends early")
    return out


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`body` with its Content-Encoding undone (gzip, deflate, br, identity; a list of them
    last first), at most `limit` bytes after each step (413 past it)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > MAX_ENCODINGS:
        raise Rejected(415, f"Content-Encoding: more than {MAX_ENCODINGS} encodings")
    if len(body) > limit:
        raise _too_large(limit)
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit, "gzip")
        elif coding == "deflate":
            body = _deflate(body, limit)
        elif coding == "br":
            body = _unbrotli(body, limit)
        else:
            raise Rejected(415, f"Content-Encoding {coding!r} is not supported (gzip, deflate, br)")
    return body
