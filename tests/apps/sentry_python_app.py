"""A small service on the real sentry-sdk, run by tests/test_sentry_intake.py.

    python sentry_python_app.py DSN MODE [COUNT] [COMPRESSION]

MODE `chain`: one chained exception (KeyError raised into RuntimeError) with tags and a
breadcrumb, a message, an error logged through `logging`, and an event with a client-set
fingerprint. MODE `storm`: COUNT raises of the same bug. COMPRESSION: br (the SDK's default
when brotli is installed), gzip or none.
"""

from __future__ import annotations

import logging
import sys

import sentry_sdk
from cart import checkout, total

dsn, mode = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
compression = sys.argv[4] if len(sys.argv) > 4 else "br"
sentry_sdk.init(
    dsn=dsn,
    release="shop@4f2a9c1e",
    environment="prod",
    transport_queue_size=10_000,
    auto_enabling_integrations=False,  # no probing of every installed library
    _experiments=(
        {"transport_compression_level": 0}
        if compression == "none"
        else {"transport_compression_algo": compression}
    ),
)
sentry_sdk.set_tag("region", "eu")

if mode == "chain":
    sentry_sdk.add_breadcrumb(
        category="cart", message="added sku 42 password=hunter2", level="info"
    )
    try:
        checkout({"price": 3})
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.capture_message("inventory sync is slow", level="warning")
    logging.getLogger("shop.jobs").error("job %s failed", "nightly")
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["cart-total", "{{ default }}"]
        try:
            total({})
        except KeyError:
            sentry_sdk.capture_exception()
elif mode == "storm":
    for _ in range(count):
        try:
            total({"price": 3})
        except KeyError:
            sentry_sdk.capture_exception()
sentry_sdk.flush(timeout=20)
