"""Reading a request body within a byte budget, declared or streamed (chunked bodies too)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request


class BodyRefused(Exception):
    """The body cannot be read within the budget; `status` is the HTTP answer it earns."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The whole body, or BodyRefused (413 past `limit`, 400 for a bad length or a client
    that left midway) before more than `limit` bytes are held."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdecimal()):
            raise BodyRefused(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise BodyRefused(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise BodyRefused(413, f"body exceeds the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; nothing was started.
        raise BodyRefused(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)
