"""The envelope sentry-sdk writes for an exception, captured in this process by a transport
that keeps it instead of sending it (for fuzz sets and benchmarks)."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport


def sdk_envelope(error: BaseException, release: str = "shop@4f2a9c1e") -> Envelope:
    captured: list[Envelope] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Envelope) -> None:
            captured.append(envelope)

    client = sentry_sdk.Client(
        dsn="http://key@127.0.0.1:9/1",
        transport=Capture(),
        default_integrations=False,
        release=release,
    )
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        sentry_sdk.capture_exception(error)
    client.flush()
    [envelope] = captured
    return envelope
