"""Following a frame's calls to the project code it hands its work to (remedy.calls)."""

from __future__ import annotations

from remedy.calls import callees, module_name, module_path
from remedy.evidence import ranked_files
from remedy.models import CalledCode, Evidence, FrameEvidence

FILES = {
    "shop/__init__.py": "from .pricing import discount_for\n",
    "shop/pricing.py": (
        "import json\n\n\n"
        "def discount_for(code):\n"
        "    return json.loads(code)['rate']\n\n\n"
        "class Cart:\n"
        "    def total(self, items):\n"
        "        return sum(items)\n"
    ),
    "shop/checkout.py": (
        "from shop import pricing\n"
        "from .pricing import Cart\n\n\n"
        "def checkout(items, code):\n"
        "    rate = pricing.discount_for(code)\n"
        "    return Cart().total(items) * (1 - rate)\n"
    ),
    "tests/test_checkout.py": (
        "import functools\n"
        "import unittest\n\n"
        "import shop\n"
        "from shop.checkout import checkout\n\n"
        "price = functools.partial(shop.discount_for, '{}')\n\n\n"
        "class CheckoutTest(unittest.TestCase):\n"
        "    def test_checkout(self):\n"
        "        total = checkout([1, 2], '{\"rate\": 0.5}')\n"
        "        self.assertEqual(total, 1.5)\n\n"
        "    def test_price(self):\n"
        "        self.assertEqual(price(), 0)\n"
    ),
}


def read(path: str) -> str | None:
    return FILES.get(path)


def names(found: list) -> list[tuple[str, str]]:
    return [(callee.path, callee.symbol) for callee in found]


def test_a_test_frame_leads_to_the_code_under_test_not_the_assertion() -> None:
    # The failing line is the assertion; the value came from the line before it.
    found = callees("tests/test_checkout.py", 12, FILES, read, function="test_checkout")
    assert names(found) == [("shop/checkout.py", "checkout")]
    assert (found[0].start_line, found[0].end_line) == (5, 7)
    assert found[0].caller == "tests/test_checkout.py:12"


def test_a_line_that_moved_is_found_by_the_function_name() -> None:
    # The traceback's line points past the function (the test file changed since).
    found = callees("tests/test_checkout.py", 3, FILES, read, function="test_checkout")
    assert names(found) == [("shop/checkout.py", "checkout")]


def test_a_same_module_helper_is_followed_through_a_package_re_export() -> None:
    found = callees("tests/test_checkout.py", 15, FILES, read, function="test_price")
    assert names(found) == [("shop/pricing.py", "discount_for")]


def test_a_service_frame_follows_its_failing_statement_only() -> None:
    found = callees("shop/checkout.py", 6, FILES, read, function="checkout")
    assert names(found) == [("shop/pricing.py", "discount_for")]
    found = callees("shop/checkout.py", 7, FILES, read, function="checkout")
    assert names(found) == [("shop/pricing.py", "Cart")]


def test_library_calls_and_unparsable_files_yield_nothing() -> None:
    assert callees("shop/pricing.py", 5, FILES, read) == []  # json.loads: not the project's
    broken = {"app.py": "def f(:\n"}
    assert callees("app.py", 1, broken, broken.get) == []
    assert callees("app.js", 1, {"app.js": "f()"}, {"app.js": "f()"}.get) == []


def test_module_names_and_paths_follow_python_layouts() -> None:
    assert module_name("src/shop/pricing.py") == "shop.pricing"
    assert module_name("shop/__init__.py") == "shop"
    assert module_path("shop.pricing", {"src/shop/pricing.py"}) == "src/shop/pricing.py"
    assert module_path("shop", {"shop/__init__.py"}) == "shop/__init__.py"
    assert module_path("json", set(FILES)) is None


def test_called_code_ranks_after_the_frames_and_before_the_tests() -> None:
    evidence = Evidence(
        summary="",
        frames=[FrameEvidence(path="tests/test_checkout.py", line=12, function="test_checkout")],
        called_code=[
            CalledCode(
                path="shop/checkout.py",
                symbol="checkout",
                start_line=5,
                end_line=7,
                caller="tests/test_checkout.py:12",
            )
        ],
    )
    assert ranked_files(evidence) == ["shop/checkout.py", "tests/test_checkout.py"]
