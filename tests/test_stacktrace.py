"""Traceback parsing against real output.

Python tracebacks are produced here by running small programs with this interpreter. The Java
and Node.js samples under tests/data/tracebacks/ were printed by OpenJDK 17 and Node.js 20;
the Go ones follow Go 1.22's panic format.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remedy.models import Frame
from remedy.stacktrace import (
    PARSERS,
    GoParser,
    JavaParser,
    NodeParser,
    ParserRegistry,
    PythonParser,
    mark_in_app,
    parse_exception_line,
    parse_traceback,
    register_parser,
)

SAMPLES = Path(__file__).parent / "data" / "tracebacks"


def run_python(root: Path, files: dict[str, str], main: str = "main.py") -> str:
    """Write `files` under `root`, run `main` there and return the traceback it prints."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    result = subprocess.run(
        [sys.executable, main], cwd=root, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0, result.stdout
    return result.stderr


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def calls(frames: list[Frame]) -> list[tuple[str, int | None, str | None]]:
    return [(Path(frame.file).name, frame.line, frame.function) for frame in frames]


# ---------------------------------------------------------------------------- Python


CART_PACKAGE = {
    "app/__init__.py": "",
    "app/cart.py": """\
        PRICES = {"sku-1": 10}


        def total(skus):
            return sum(price_of(sku) for sku in skus)


        def price_of(sku):
            return PRICES[sku] * 2
        """,
    "main.py": """\
        from app.cart import total

        total(["sku-1", "sku-2"])
        """,
}


def test_python_exception_inside_a_package(tmp_path: Path) -> None:
    text = run_python(tmp_path, CART_PACKAGE)

    frames = parse_traceback(text)

    assert calls(frames) == [
        ("main.py", 3, "<module>"),
        ("cart.py", 5, "total"),
        ("cart.py", 5, "<genexpr>"),
        ("cart.py", 9, "price_of"),
    ]
    assert frames[-1].file == str(tmp_path / "app" / "cart.py")
    assert frames[-1].code == "return PRICES[sku] * 2"
    assert frames[0].code == 'total(["sku-1", "sku-2"])'
    assert parse_exception_line(text) == ("KeyError", "'sku-2'")


def test_python_caret_lines_are_not_source(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "main.py": """\
                data = {"a": {"b": 1}}


                def read():
                    return data["a"]["c"] + 1


                read()
                """
        },
    )
    assert "^^^" in text  # 3.11+ prints carets under the failing expression

    frames = parse_traceback(text)

    assert [frame.code for frame in frames] == ["read()", 'return data["a"]["c"] + 1']


def test_python_chained_exceptions_keep_the_last_block(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/errors.py": "class PaymentError(Exception):\n    pass\n",
            "app/pay.py": """\
                from app.errors import PaymentError


                def charge(card):
                    try:
                        return 100 / card["balance"]
                    except ZeroDivisionError as exc:
                        raise PaymentError("card declined") from exc


                def checkout(card):
                    try:
                        return charge(card)
                    except PaymentError:
                        return int("not a number")
                """,
            "main.py": "from app.pay import checkout\n\ncheckout({'balance': 0})\n",
        },
    )
    assert "The above exception was the direct cause" in text
    assert "During handling of the above exception" in text

    frames = parse_traceback(text)

    assert calls(frames) == [("main.py", 3, "<module>"), ("pay.py", 15, "checkout")]
    assert parse_exception_line(text) == (
        "ValueError",
        "invalid literal for int() with base 10: 'not a number'",
    )


def test_python_qualified_exception_type(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/errors.py": "class PaymentError(Exception):\n    pass\n",
            "main.py": "from app.errors import PaymentError\nraise PaymentError('card declined')\n",
        },
    )
    assert parse_exception_line(text) == ("app.errors.PaymentError", "card declined")


def test_python_bare_exception_line(tmp_path: Path) -> None:
    text = run_python(tmp_path, {"main.py": "raise ZeroDivisionError\n"})
    assert parse_exception_line(text) == ("ZeroDivisionError", "")


def test_python_recursion_keeps_printed_frames(tmp_path: Path) -> None:
    text = run_python(tmp_path, {"main.py": "def walk(n):\n    return walk(n + 1)\n\nwalk(0)\n"})
    assert "[Previous line repeated" in text

    frames = parse_traceback(text)

    assert calls(frames)[0] == ("main.py", 4, "<module>")
    assert {call for call in calls(frames)[1:]} == {("main.py", 2, "walk")}
    assert all(frame.code == "return walk(n + 1)" for frame in frames[1:])
    assert parse_exception_line(text) == ("RecursionError", "maximum recursion depth exceeded")


def test_python_frozen_and_string_frames(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "main.py": """\
                import importlib

                exec(compile('importlib.import_module("nope")', "<string>", "exec"))
                """
        },
    )

    frames = parse_traceback(text)

    files = [frame.file for frame in frames]
    assert files[0].endswith("main.py")
    assert "<string>" in files
    assert any(file.startswith("<frozen importlib") for file in files)
    frozen = next(frame for frame in frames if frame.file.startswith("<frozen"))
    assert frozen.code is None and frozen.function and frozen.line
    assert parse_exception_line(text) == ("ModuleNotFoundError", "No module named 'nope'")


def test_python_exception_group_follows_the_first_sub_exception(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "main.py": """\
                def reserve(sku):
                    raise KeyError(sku)


                def pay():
                    raise ValueError("card declined")


                def checkout():
                    errors = []
                    for step in (lambda: reserve("sku-9"), pay):
                        try:
                            step()
                        except Exception as exc:
                            errors.append(exc)
                    raise ExceptionGroup("checkout failed", errors)


                checkout()
                """
        },
    )
    assert "+-+----" in text and "  | " in text

    frames = parse_traceback(text)

    assert [frame.function for frame in frames] == [
        "<module>",
        "checkout",
        "checkout",
        "<lambda>",
        "reserve",
    ]
    assert frames[-1].code == "raise KeyError(sku)"
    assert parse_exception_line(text) == ("ExceptionGroup", "checkout failed (2 sub-exceptions)")


def test_python_nested_exception_group_does_not_crash(tmp_path: Path) -> None:
    text = run_python(
        tmp_path,
        {
            "main.py": """\
                def leaf():
                    raise ValueError("leaf")


                def inner():
                    try:
                        leaf()
                    except ValueError as exc:
                        raise ExceptionGroup("inner", [exc])


                def outer():
                    errors = []
                    try:
                        inner()
                    except ExceptionGroup as group:
                        errors.append(group)
                    raise ExceptionGroup("outer", [*errors, KeyError(1)])


                try:
                    1 / 0
                except ZeroDivisionError:
                    outer()
                """
        },
    )

    frames = parse_traceback(text)

    assert frames[0].function == "<module>" and frames[-1].function == "leaf"
    assert parse_exception_line(text) == ("ExceptionGroup", "outer (2 sub-exceptions)")


def test_python_syntax_error_location_is_a_frame(tmp_path: Path) -> None:
    text = run_python(tmp_path, {"app.py": "def broken(:\n    pass\n", "main.py": "import app\n"})

    frames = parse_traceback(text)

    assert calls(frames)[-1] == ("app.py", 1, None)
    exception = parse_exception_line(text)
    assert exception is not None and exception[0] == "SyntaxError"


def test_python_traceback_without_header() -> None:
    text = (
        '  File "/srv/app/app/cart.py", line 42, in total\n'
        "    return prices[sku]\n"
        "KeyError: 'sku'\n"
    )
    assert parse_traceback(text) == [
        Frame(file="/srv/app/app/cart.py", line=42, function="total", code="return prices[sku]")
    ]
    assert parse_exception_line(text) == ("KeyError", "'sku'")


def test_python_traceback_indented_by_a_logger(tmp_path: Path) -> None:
    text = run_python(tmp_path, CART_PACKAGE)
    indented = "ERROR checkout failed\n" + "".join(f"    {line}" for line in text.splitlines(True))

    assert parse_traceback(indented) == parse_traceback(text)
    assert parse_exception_line(indented) == ("KeyError", "'sku-2'")


# ---------------------------------------------------------------------------- Java


def test_java_root_cause_with_more_frames_expanded() -> None:
    text = sample("java_caused_by.txt")

    frames = parse_traceback(text)

    assert (frames[0].file, frames[0].line, frames[0].function, frames[0].module) == (
        "com/acme/shop/Checkout.java",
        19,
        "main",
        "com.acme.shop.Checkout",
    )
    assert (frames[-1].file, frames[-1].line, frames[-1].function) == (
        "com/acme/shop/Cart.java",
        10,
        "total",
    )
    assert frames[-2].function == "lambda$run$0"
    assert frames[1].line == 12  # the root cause's own frame, not the wrapper's line 14
    assert len(frames) == 12
    assert any(frame.module == "java.util.stream.IntPipeline" for frame in frames)
    exception = parse_exception_line(text)
    assert exception is not None
    assert exception[0] == "java.lang.NullPointerException"
    assert exception[1].startswith('Cannot invoke "java.lang.Integer.intValue()"')


def test_java_suppressed_exceptions_are_ignored() -> None:
    text = sample("java_suppressed.txt")

    frames = parse_traceback(text)

    assert calls(frames) == [
        ("Inventory.java", 19, "main"),
        ("Inventory.java", 18, "lambda$main$0"),
        ("Inventory.java", 11, "reserve"),
    ]
    assert parse_exception_line(text) == (
        "java.lang.IllegalArgumentException",
        "qty 5 exceeds stock for sku-9",
    )


def test_java_native_and_unknown_sources() -> None:
    text = (
        "java.lang.IllegalStateException: boom\n"
        "\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)\n"
        "\tat com.acme.Gen$$Lambda$14/0x0000000800c03000.apply(Unknown Source)\n"
        "\tat com.acme.Main.main(Main.kt:7) ~[app.jar:1.0]\n"
    )

    frames = parse_traceback(text)

    assert [(frame.file, frame.line) for frame in frames] == [
        ("com/acme/Main.kt", 7),
        ("com/acme/Gen", None),
        ("jdk/internal/reflect/NativeMethodAccessorImpl", None),
    ]


# ---------------------------------------------------------------------------- Node.js


def test_node_uncaught_type_error() -> None:
    text = sample("node_uncaught.txt")

    frames = parse_traceback(text)

    assert [(frame.file, frame.line, frame.function) for frame in frames[-5:]] == [
        ("/srv/app/server.js", 8, "Object.<anonymous>"),
        ("/srv/app/server.js", 5, "handle"),
        ("/srv/app/cart.js", 5, "total"),
        ("<anonymous>", None, "Array.reduce"),
        ("/srv/app/cart.js", 5, None),
    ]
    assert frames[0].file == "node:internal/modules/run_main"
    assert parse_exception_line(text) == (
        "TypeError",
        "Cannot read properties of undefined (reading 'amount')",
    )


def test_node_async_frames_and_cause() -> None:
    text = sample("node_async_cause.txt")

    frames = parse_traceback(text)

    assert calls(frames) == [
        ("worker.js", 14, "main"),
        ("worker.js", 8, "processOrder"),
        ("worker.js", 4, "loadOrder"),
    ]
    assert parse_exception_line(text) == ("Error", "order 1042 not found")


def test_node_file_urls_and_eval() -> None:
    text = (
        "Error: bad\n"
        "    at file:///srv/app/index.mjs:3:9\n"
        "    at eval (eval at run (/srv/app/x.js:1:1), <anonymous>:1:1)\n"
        "    at Promise.all (index 0)\n"
        "    at new Cart (/srv/app/cart.js:2:3)\n"
    )

    frames = parse_traceback(text)

    assert [(frame.file, frame.line, frame.function) for frame in frames] == [
        ("/srv/app/cart.js", 2, "new Cart"),
        ("<index 0>", None, "Promise.all"),
        ("/srv/app/x.js", 1, "eval"),
        ("/srv/app/index.mjs", 3, None),
    ]
    assert parse_exception_line(text) == ("Error", "bad")


# ---------------------------------------------------------------------------- Go


def test_go_panicking_goroutine_only() -> None:
    text = sample("go_goroutine.txt")

    frames = parse_traceback(text)

    assert [(frame.module, frame.function, frame.line) for frame in frames] == [
        ("github.com/acme/shop/internal/worker", "(*Pool).Start", 29),
        ("github.com/acme/shop/internal/worker", "(*Pool).Start.func1", 31),
        ("github.com/acme/shop/internal/worker", "(*Pool).process", 57),
        ("github.com/acme/shop/internal/cart", "(*Cart).Total", 42),
    ]
    assert frames[-1].file == "/home/runner/work/shop/internal/cart/cart.go"
    assert parse_exception_line(text) == (
        "panic",
        "runtime error: invalid memory address or nil pointer dereference",
    )


def test_go_repanic_and_inlined_frames() -> None:
    text = sample("go_repanic.txt")

    frames = parse_traceback(text)

    assert [(frame.function, frame.line) for frame in frames] == [
        ("main", 16),
        ("charge", 27),
        ("panic", 770),
        ("main.func1", 12),
    ]
    assert frames[2].module is None
    assert parse_exception_line(text) == ("panic", "order 1042: payment declined")


# ---------------------------------------------------------------------------- registry


def test_unknown_format_gives_nothing() -> None:
    assert parse_traceback("something went wrong\nplease retry") == []
    assert parse_exception_line("something went wrong") is None
    assert parse_traceback("") == []


def test_built_in_parsers_detect_only_their_format() -> None:
    texts = {
        name: sample(f"{name}.txt") for name in ("java_caused_by", "node_uncaught", "go_repanic")
    }
    texts["python"] = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\nKeyError: 1\n'
    )
    detected = {
        name: [parser.name for parser in PARSERS.parsers if parser.detect(text)]
        for name, text in texts.items()
    }
    assert detected == {
        "java_caused_by": ["java"],
        "node_uncaught": ["node"],
        "go_repanic": ["go"],
        "python": ["python"],
    }


class RubyParser:
    name = "ruby"

    def detect(self, text: str) -> bool:
        return text.startswith("ruby:")

    def parse(self, text: str) -> list[Frame]:
        return [
            Frame(file=line.split(":")[0], line=int(line.split(":")[1]))
            for line in text.split()[1:]
        ]

    def exception(self, text: str) -> tuple[str, str] | None:
        return ("RuntimeError", "from ruby")


def test_registered_parser_is_tried_first_and_replaces_by_name() -> None:
    registry = ParserRegistry([PythonParser(), JavaParser(), NodeParser(), GoParser()])
    registry.register(RubyParser())

    assert [parser.name for parser in registry.parsers] == ["ruby", "python", "java", "node", "go"]
    assert registry.parse("ruby: app/cart.rb:4 app/main.rb:9") == [
        Frame(file="app/cart.rb", line=4),
        Frame(file="app/main.rb", line=9),
    ]
    assert registry.exception("ruby: x.rb:1") == ("RuntimeError", "from ruby")

    registry.register(RubyParser())
    assert [parser.name for parser in registry.parsers].count("ruby") == 1
    registry.unregister("ruby")
    assert registry.parse("ruby: app/cart.rb:4") == []


def test_register_parser_extends_parse_traceback() -> None:
    register_parser(RubyParser())
    try:
        assert parse_traceback("ruby: app/cart.rb:4") == [Frame(file="app/cart.rb", line=4)]
        assert parse_exception_line("ruby: app/cart.rb:4") == ("RuntimeError", "from ruby")
    finally:
        PARSERS.unregister("ruby")
    assert parse_traceback("ruby: app/cart.rb:4") == []


def test_huge_lines_are_clipped_to_frame_limits() -> None:
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{"d/" * 1000}x.py", line 1, in {"f" * 900}\n'
        f"    {'x' * 5000}\n"
        "ValueError\n"
    )

    (frame,) = parse_traceback(text)

    assert (
        len(frame.file) == 1024
        and len(frame.function or "") == 512
        and len(frame.code or "") == 2000
    )


# ---------------------------------------------------------------------------- in-app


@pytest.mark.parametrize(
    ("frame", "in_app"),
    [
        (Frame(file="/srv/app/app/cart.py"), True),
        (Frame(file="app/cart.py"), True),
        (Frame(file="/srv/app/.venv/lib/python3.11/site-packages/requests/api.py"), False),
        (Frame(file="/usr/lib/python3/dist-packages/yaml/__init__.py"), False),
        (Frame(file="/usr/local/lib/python3.11/json/decoder.py"), False),
        (Frame(file="/usr/lib/something/else.py"), False),
        (Frame(file="<frozen importlib._bootstrap>"), False),
        (Frame(file="<string>"), False),
        (Frame(file="/srv/app/node_modules/express/lib/router/index.js"), False),
        (Frame(file="node:internal/modules/cjs/loader"), False),
        (Frame(file="/usr/local/go/src/runtime/panic.go"), False),
        (Frame(file="/srv/app/main.go", module="runtime"), False),
        (Frame(file="/root/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go"), False),
        (Frame(file="java/util/HashMap.java", module="java.util.HashMap"), False),
        (Frame(file="org/springframework/web/X.java", module="org.springframework.web.X"), False),
        (Frame(file="kotlin/collections/X.kt", module="kotlin.collections.X"), False),
        (Frame(file="com/acme/shop/Cart.java", module="com.acme.shop.Cart"), True),
        (Frame(file=r"C:\app\.venv\Lib\site-packages\flask\app.py"), False),
    ],
)
def test_mark_in_app_defaults(frame: Frame, in_app: bool) -> None:
    assert mark_in_app([frame])[0].in_app is in_app


def test_mark_in_app_include_and_explicit_values() -> None:
    frames = [
        Frame(file="/srv/app/.venv/lib/python3.11/site-packages/acme_common/db.py"),
        Frame(file="org/apache/acme/Lib.java", module="org.apache.acme.Lib"),
        Frame(file="java/util/HashMap.java", module="java.util.HashMap"),
        Frame(file="/srv/app/app/cart.py", in_app=False),
        Frame(file="<string>", in_app=True),
    ]

    marked = mark_in_app(frames, include=["acme_common/", "org.apache.acme.", "java.util."])

    assert [frame.in_app for frame in marked] == [True, True, True, False, True]
    assert [frame.in_app for frame in frames] == [None, None, None, False, True]  # not mutated
