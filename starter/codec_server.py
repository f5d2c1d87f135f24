"""`remedy codec-server`: Temporal's remote codec endpoint, so the UI and the CLI show
incidents decrypted while the database holds ciphertext (docs/codec.md).

The protocol is Temporal's (samples-go `codec-server/protocol.md`): `POST .../encode` and
`POST .../decode` take and return `{"payloads": [...]}`, Payloads in protobuf's JSON form
(metadata values and data base64); only the last part of the path counts, so the endpoint
may sit under a prefix. The Temporal UI calls it from the browser (CORS, preflight with
`Authorization` and `X-Namespace`); `temporal --codec-endpoint` calls it directly.

Anyone who can call /decode reads every incident, so with a token in [codec]
server_token_env every call needs `Authorization: Bearer <token>`; without one the server
refuses to listen anywhere but loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from remedy.codec import CodecDecodeError, EncryptionCodec
from remedy.config import RemedyConfig, secret
from starter.request_body import BodyRefused, read_capped_body

log = logging.getLogger(__name__)

# What the Temporal UI sends: Content-Type, X-Namespace, and Authorization when its codec
# setting "pass the user access token" is on.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Namespace"]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def codec_endpoint(config: RemedyConfig) -> str:
    """The URL a browser on this machine reaches the codec server at."""
    host = config.codec.server_host
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = "127.0.0.1"
        elif address.version == 6:
            host = f"[{host}]"
    return f"http://{host}:{config.codec.server_port}"


def cors_origins(config: RemedyConfig) -> list[str]:
    """[codec] cors_origins, or the configured UI and the dev UI on both loopback names."""
    if config.codec.cors_origins is not None:
        return list(config.codec.cors_origins)
    port = config.temporal.dev_ui_port
    found = [config.temporal.ui_url.rstrip("/")]
    found += [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return list(dict.fromkeys(found))


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusal(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _read_payloads(body: bytes) -> list[Payload]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body is not JSON ({exc})") from None
    except RecursionError:
        raise Refused(400, "body is nested too deeply to be Payloads") from None
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        raise Refused(400, 'body must be {"payloads": [...]} (Temporal Payloads as JSON)')
    for index, payload in enumerate(document["payloads"]):
        _check_base64(payload, f"payloads[{index}]")
    try:
        return list(json_format.ParseDict(document, Payloads()).payloads)
    except json_format.ParseError as exc:
        raise Refused(400, f"payloads: {exc}") from None


def _check_base64(payload: Any, where: str) -> None:
    """protobuf's own reader lets any text through as bytes ('***' reads as empty); the data and
    metadata values must be base64, standard or URL-safe, padded or not."""
    if not isinstance(payload, dict):
        raise Refused(400, f"{where} must be an object with metadata and data")
    metadata = payload.get("metadata") or {}
    fields = [("data", payload.get("data"))]
    if isinstance(metadata, dict):
        fields += [(f"metadata.{key}", value) for key, value in metadata.items()]
    for name, value in fields:
        if not isinstance(value, str):
            continue  # absent, or a type protobuf's reader names itself
        standard = value.replace("-", "+").replace("_", "/")
        try:
            base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except ValueError:
            raise Refused(400, f"{where}.{name} is not base64") from None


def create_codec_app(config: RemedyConfig, codec: EncryptionCodec, token: str | None) -> Starlette:
    """The codec endpoint around `codec`; `token`: the bearer token every call needs."""
    namespace = config.temporal.namespace
    limit = config.codec.max_body_bytes

    def authorize(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, credential = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.encode()
        ):
            # The same words for a missing and a wrong token.
            raise Refused(401, "a valid bearer token is required (Authorization: Bearer ...)")

    async def convert(request: Request, one: Callable[[Payload], Payload]) -> Response:
        try:
            authorize(request)
            asked = request.headers.get("x-namespace")
            if asked is not None and asked != namespace:
                raise Refused(403, f"X-Namespace: this codec server serves {namespace!r} only")
            media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json":
                raise Refused(415, "Content-Type must be application/json")
            try:
                body = await read_capped_body(request, limit)
            except BodyRefused as exc:
                raise Refused(exc.status, exc.message) from None
            converted = []
            for index, payload in enumerate(_read_payloads(body)):
                try:
                    converted.append(one(payload))
                except CodecDecodeError as exc:
                    raise Refused(400, f"payloads[{index}]: {exc}") from None
        except Refused as exc:
            return _refusal(exc.status, exc.message)
        text = json_format.MessageToJson(Payloads(payloads=converted), indent=None)
        return Response(text, media_type="application/json")

    async def encode(request: Request) -> Response:
        return await convert(request, codec.encrypt)

    async def decode(request: Request) -> Response:
        return await convert(request, codec.decrypt)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/encode", encode, methods=["POST"]),
        Route("/decode", decode, methods=["POST"]),
        Route("/{prefix:path}/encode", encode, methods=["POST"]),
        Route("/{prefix:path}/decode", decode, methods=["POST"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=cors_origins(config),
        allow_methods=["POST"],
        allow_headers=ALLOWED_HEADERS,
        # The UI's "include cross-origin credentials" (a proxy's login cookie) needs this.
        allow_credentials=True,
        max_age=600,
    )
    return Starlette(routes=routes, middleware=[cors])


def server_settings(config: RemedyConfig, host: str | None) -> tuple[str, str | None]:
    """Where to listen and the token to ask for, or a one-line reason to refuse."""
    listen = host or config.codec.server_host
    if not config.codec.enabled:
        raise ValueError(
            "the codec is off: set [codec] enabled = true (or REMEDY_CODEC__ENABLED=true) "
            f"and the keys in {config.codec.keys_env}"
        )
    token = secret(config.codec.server_token_env)
    if token is None and not is_loopback(listen):
        raise ValueError(
            f"{config.codec.server_token_env} is unset, so the codec server listens on "
            f"loopback only, not {listen!r}: set it to a bearer token to listen there"
        )
    return listen, token
