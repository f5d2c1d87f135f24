"""Fingerprints of real tracebacks: one per bug, stable across deploys."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remedy.fingerprint import call_path, fingerprint, normalize_message, stable_path
from remedy.models import Frame
from remedy.stacktrace import parse_exception_line, parse_traceback

CART = """\
    PRICES = {"sku-1": 10}


    def total(skus):
        return sum(price_of(sku) for sku in skus)


    def price_of(sku):
        return PRICES[sku] * 2
    """
MAIN = """\
    import sys

    from app.cart import total

    total(sys.argv[1:])
    """


def deploy(root: Path, cart: str = CART, main: str = MAIN) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "cart.py").write_text(textwrap.dedent(cart))
    (root / "main.py").write_text(textwrap.dedent(main))
    return root


def crash(root: Path, *args: str) -> tuple[str, list[Frame]]:
    """Run the deployed service; return its fingerprint and frames."""
    result = subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    exception = parse_exception_line(result.stderr)
    assert exception is not None, result.stderr
    frames = parse_traceback(result.stderr)
    return fingerprint(*exception, frames), frames


def test_shape() -> None:
    value = fingerprint("KeyError", "'sku'", [Frame(file="app/cart.py", line=1, function="f")])
    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert value == fingerprint(
        "KeyError", "'sku'", [Frame(file="app/cart.py", line=1, function="f")]
    )


def test_same_bug_at_other_line_numbers(tmp_path: Path) -> None:
    moved = "# pricing rules\n# (see docs)\n\n\n" + textwrap.dedent(CART).replace(
        "def price_of", "# looked up per request\ndef price_of"
    )
    before, before_frames = crash(deploy(tmp_path / "srv" / "shop-1.4.0"), "sku-1", "sku-2")
    after, after_frames = crash(
        deploy(tmp_path / "srv" / "shop-1.4.1", cart=moved), "sku-1", "sku-2"
    )

    assert [f.line for f in before_frames] != [f.line for f in after_frames]
    assert before == after


def test_same_bug_under_other_deploy_roots(tmp_path: Path) -> None:
    versioned, versioned_frames = crash(deploy(tmp_path / "srv" / "app-1.2.3"), "sku-9")
    plain, _ = crash(deploy(tmp_path / "opt" / "app"), "sku-9")
    released, _ = crash(deploy(tmp_path / "srv" / "releases" / "20261121090000"), "sku-9")

    assert "/srv/app-1.2.3/app/cart.py" in versioned_frames[-1].file
    assert versioned == plain == released
    relative = [frame.model_copy(update={"file": "app/cart.py"}) for frame in versioned_frames]
    relative[0] = relative[0].model_copy(update={"file": "main.py"})
    assert fingerprint("KeyError", "'sku-9'", relative) == versioned


def test_same_bug_with_other_quoted_values(tmp_path: Path) -> None:
    root = deploy(tmp_path / "app")
    assert crash(root, "sku-2")[0] == crash(root, "sku-1", "gift-card-77")[0]


def test_other_call_path_is_another_bug(tmp_path: Path) -> None:
    root = deploy(tmp_path / "a")
    other = deploy(
        tmp_path / "b",
        main="""\
            import sys

            from app.cart import price_of

            price_of(sys.argv[1])
            """,
    )
    assert crash(root, "sku-2")[0] != crash(other, "sku-2")[0]


def test_other_error_type_is_another_bug(tmp_path: Path) -> None:
    fingerprint_key, frames = crash(deploy(tmp_path / "a"), "sku-2")
    assert fingerprint("LookupError", "'sku-2'", frames) != fingerprint_key
    assert fingerprint("builtins.KeyError", "'sku-2'", frames) == fingerprint_key


def test_recursion_depth_does_not_matter(tmp_path: Path) -> None:
    walker = """\
        def walk(node, depth):
            if depth == 0:
                return node["missing"]
            return walk(node, depth - 1)


        def total(skus):
            return walk({}, int(skus[0]))
        """
    root = deploy(tmp_path / "app", cart=walker)
    shallow, shallow_frames = crash(root, "1")
    deep, deep_frames = crash(root, "7")

    assert len(deep_frames) > len(shallow_frames)
    assert shallow == deep


def test_library_frames_do_not_count_when_in_app_frames_exist() -> None:
    app = [
        Frame(file="/srv/app/app/views.py", line=10, function="checkout"),
        Frame(file="/srv/app/app/cart.py", line=42, function="total"),
    ]
    library = Frame(
        file="/srv/app/.venv/lib/python3.11/site-packages/sqlalchemy/orm/query.py",
        line=2790,
        function="one",
    )
    upgraded = library.model_copy(update={"line": 2801, "function": "_one"})

    with_library = fingerprint("NoResultFound", "No row was found", [*app, library])
    assert with_library == fingerprint("NoResultFound", "No row was found", app)
    assert with_library == fingerprint("NoResultFound", "No row was found", [*app, upgraded])


def test_without_in_app_frames_all_frames_count() -> None:
    frames = [
        Frame(file="/usr/lib/python3.11/json/decoder.py", line=355, function="raw_decode"),
        Frame(file="/usr/lib/python3.11/json/__init__.py", line=346, function="loads"),
    ]
    assert call_path(frames) == [("json/decoder.py", "raw_decode"), ("json/__init__.py", "loads")]
    assert fingerprint("JSONDecodeError", "x", frames) != fingerprint("JSONDecodeError", "x", [])


def test_explicit_in_app_is_respected() -> None:
    frames = [
        Frame(file="app/a.py", function="f", in_app=False),
        Frame(file="app/b.py", function="g"),
    ]
    assert call_path(frames) == [("b.py", "g")]


def test_generated_names_do_not_count() -> None:
    def java(name: str) -> list[Frame]:
        return [Frame(file="com/acme/shop/Checkout.java", line=12, function=name)]

    def go(name: str) -> list[Frame]:
        return [Frame(file="/srv/app/pool.go", line=31, function=name, module="main")]

    assert fingerprint("E", "", java("lambda$run$0")) == fingerprint("E", "", java("lambda$run$3"))
    assert fingerprint("E", "", go("(*Pool).Start.func1")) == fingerprint(
        "E", "", go("(*Pool).Start.func2.1")
    )
    assert fingerprint("E", "", java("run")) != fingerprint("E", "", java("total"))


def test_message_participates_after_normalization() -> None:
    frames = [Frame(file="app/cart.py", line=42, function="total")]
    assert fingerprint("ValueError", "order 1042 has 3 items", frames) == fingerprint(
        "ValueError", "order 77 has 12 items", frames
    )
    assert fingerprint("ValueError", "order 1042 has 3 items", frames) != fingerprint(
        "ValueError", "order 1042 was cancelled", frames
    )


@pytest.mark.parametrize(
    ("file", "stable"),
    [
        ("/srv/app-1.2.3/app/cart.py", "cart.py"),
        ("/opt/app/app/cart.py", "cart.py"),
        ("app/cart.py", "cart.py"),
        ("/srv/releases/20261121090000/shop/orders/views.py", "orders/views.py"),
        ("/home/deploy/shop-3f2a9c1/shop/orders/views.py", "orders/views.py"),
        ("shop/orders/views.py", "orders/views.py"),
        ("/srv/app/app/api/v2/orders.py", "v2/orders.py"),
        (r"C:\srv\app\main.py", "main.py"),
        ("/srv/app/.venv/lib/python3.11/site-packages/requests/api.py", "requests/api.py"),
        ("/usr/local/lib/python3.12/json/decoder.py", "json/decoder.py"),
        (
            "/srv/app/node_modules/.pnpm/x@1.0.0/node_modules/express/lib/router.js",
            "express/lib/router.js",
        ),
        ("/root/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go", "github.com/lib/pq/conn.go"),
        ("/usr/local/go/src/runtime/panic.go", "runtime/panic.go"),
        ("file:///srv/app/dist/index.mjs", "index.mjs"),
        ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap>"),
        ("node:internal/modules/cjs/loader", "node:internal/modules/cjs/loader"),
        ("com/acme/shop/Cart.java", "shop/Cart.java"),
    ],
)
def test_stable_path(file: str, stable: str) -> None:
    assert stable_path(file) == stable


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        ("'sku'", "<str>"),
        ('"x"', "<str>"),
        (
            "invalid literal for int() with base 10: 'abc'",
            "invalid literal for int() with base <num>: <str>",
        ),
        ("<app.Cart object at 0x7f3a2b1c9d00>", "<app.Cart object at <hex>>"),
        ("user 550e8400-e29b-41d4-a716-446655440000 not found", "user <uuid> not found"),
        ("mail to bob.smith+x@example.co.uk bounced", "mail to <email> bounced"),
        ("GET https://api.acme.com/v1/orders?id=7 failed", "GET <url> failed"),
        ("connect to 10.0.12.7:5432 refused", "connect to <ip> refused"),
        ("peer fe80::1ff:fe23:4567:890a reset", "peer <ip> reset"),
        ("expired at 2026-11-21T09:00:00.123Z", "expired at <ts>"),
        ("blob 3f2a9c1d8e7b6a5f missing", "blob <hex> missing"),
        ("took 12.5s after 3 retries", "took <num>s after <num> retries"),
        ("can't find the user's cart", "can't find the user's cart"),
        ("codec utf8 and error AI5001", "codec utf8 and error AI5001"),
        ("deadbeef at 12:30:45", "deadbeef at <num>:<num>:<num>"),
        ("  many\n  lines\t here ", "many lines here"),
    ],
)
def test_normalize_message(message: str, normalized: str) -> None:
    assert normalize_message(message) == normalized


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("a." * 100_000, "a." * 100_000),
        ("ab:" * 66_000, "ab:" * 66_000),
        ("'a" * 100_000, "'a" * 100_000),
        ("x@" * 100_000, "x@" * 100_000),
        ("1.1.1." * 33_000, "<num>."),
        ("7" * 200_000, "<num>"),
    ],
)
def test_normalize_message_on_large_adversarial_input(text: str, normalized: str) -> None:
    # Inputs where a pattern could start at every position: the regexes must stay linear.
    assert normalize_message(text) == normalized
