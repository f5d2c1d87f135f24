"""The chunker: structure-aware units for Python, sensible fallbacks, and the skip rules."""

from __future__ import annotations

import textwrap

from remedy.index.chunking import (
    MAX_CHARS,
    chunk_file,
    decode_source,
    language_of,
    skip_reason_for_path,
)

CART = textwrap.dedent(
    '''\
    """Shopping cart."""

    import json

    TAX = 0.2


    def total(items):
        """Sum the prices, with tax."""
        return sum(i["price"] for i in items) * (1 + TAX)


    class Cart:
        """A customer's cart."""

        currency = "EUR"

        @staticmethod
        def empty():
            return Cart()

        def add(self, sku, qty):
            self.items.append({"sku": sku, "qty": qty})
    '''
)


def _by_symbol(path: str, text: str) -> dict[str | None, list]:
    found: dict[str | None, list] = {}
    for chunk in chunk_file(path, text):
        found.setdefault(chunk.symbol, []).append(chunk)
    return found


def test_python_units_keep_their_lines_and_signatures() -> None:
    chunks = chunk_file("app/cart.py", CART)
    lines = CART.splitlines()
    for chunk in chunks:
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.language == "python"
    symbols = {c.symbol: c for c in chunks}
    assert symbols["total"].kind == "function"
    assert symbols["total"].start_line == 8 and symbols["total"].end_line == 10
    assert '"""Sum the prices, with tax."""' in symbols["total"].text
    # A small class stays whole; its module preamble (docstring, imports, constant) too.
    assert symbols["Cart"].kind == "class" and "def add" in symbols["Cart"].text
    module = symbols[None]
    assert module.kind == "module" and "TAX = 0.2" in module.text and "def total" not in module.text


def test_a_large_class_splits_into_a_summary_and_methods() -> None:
    body = "\n".join(
        f"    def method_{i}(self, value):\n        return value * {i} + len('{'x' * 60}')\n"
        for i in range(12)
    )
    source = f'class Big:\n    """Many methods."""\n\n    limit = 3\n\n{body}'
    found = _by_symbol("big.py", source)
    summary = found["Big"][0]
    assert summary.kind == "class"
    assert "limit = 3" in summary.text and "def method_7(self, value):" in summary.text
    assert "return value * 7" not in summary.text
    method = found["Big.method_7"][0]
    assert method.kind == "method" and method.context.startswith("class Big:")
    assert "return value * 7" in method.text
    assert "big.py method Big.method_7" in method.embed_text


def test_a_long_function_becomes_windows_that_name_it() -> None:
    statements = "\n".join(f"    value_{i} = compute('{'y' * 40}', {i})" for i in range(80))
    source = f"@cached\ndef very_long(a, b):\n{statements}\n    return value_0\n"
    windows = chunk_file("long.py", source)
    assert len(windows) > 3
    assert windows[0].start_line == 1 and windows[-1].end_line == source.count("\n")
    assert all(w.symbol == "very_long" for w in windows)
    assert all(len(w.text) <= MAX_CHARS for w in windows)
    assert all("def very_long(a, b):" in w.context for w in windows[1:])
    # Windows overlap a little and leave no line out.
    covered = {n for w in windows for n in range(w.start_line, w.end_line + 1)}
    assert covered == set(range(1, source.count("\n") + 1))


def test_moving_code_keeps_its_content_hash() -> None:
    before = chunk_file("app/cart.py", CART)
    after = chunk_file("app/cart.py", "# a new first line\n\n" + CART)
    total_before = next(c for c in before if c.symbol == "total")
    total_after = next(c for c in after if c.symbol == "total")
    assert total_after.start_line == total_before.start_line + 2
    assert total_after.content_hash == total_before.content_hash
    # ...but the same code in another file is another chunk.
    other = next(c for c in chunk_file("app/other.py", CART) if c.symbol == "total")
    assert other.content_hash != total_before.content_hash


def test_fallbacks_for_broken_python_markdown_and_other_languages() -> None:
    broken = "def ok():\n    return 1\n\ndef broken(:\n    pass\n"
    chunks = chunk_file("bad.py", broken)
    assert chunks and {c.kind for c in chunks} == {"lines"}
    assert [c.symbol for c in chunks] == ["ok", "broken"]

    doc = "# Setup\n\nInstall it.\n\n## Running\n\nRun `make dev`.\n"
    sections = chunk_file("README.md", doc)
    assert [(c.symbol, c.kind) for c in sections] == [("Setup", "section"), ("Running", "section")]

    go = "package main\n\nimport \"fmt\"\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n\n" \
         "func (s *Server) Handle(w Writer) {\n\tfmt.Println(w)\n}\n"  # fmt: skip
    symbols = [c.symbol for c in chunk_file("main.go", go)]
    assert "Add" in symbols and "Handle" in symbols
    assert chunk_file("empty.py", "\n\n") == []


def test_skip_rules() -> None:
    assert skip_reason_for_path("app/cart.py", 100) is None
    assert skip_reason_for_path("vendor/lib/x.py", 100) == "vendored"
    assert skip_reason_for_path("web/node_modules/a/index.js", 100) == "vendored"
    assert skip_reason_for_path("api/v1/service_pb2.py", 100) == "generated"
    assert skip_reason_for_path("static/app.min.js", 100) == "generated"
    assert skip_reason_for_path("assets/logo.png", 100) == "unsupported"
    assert skip_reason_for_path("data/big.py", 10_000_000) == "huge"
    assert language_of("Dockerfile") == "dockerfile"

    assert decode_source(b"x = 1\n") == ("x = 1\n", None)
    assert decode_source(b"\x89PNG\0\0") == (None, "binary")
    assert decode_source(b"\xff\xfe bad utf-8") == (None, "binary")
    assert decode_source(b"# Code generated by protoc. DO NOT EDIT.\nx = 1\n") == (
        None,
        "generated",
    )
