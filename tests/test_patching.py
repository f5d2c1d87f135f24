"""The exact-edit rules of remedy.patching, on files held in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from remedy.models import Edit
from remedy.patching import EditedFile, EditRefused, apply_edits, repo_path

CART = "def total(items):\n    return sum(item['price'] for item in items)\n"
WHERE = "commit 0123456789ab"


@dataclass
class MemoryFiles:
    """A commit as path -> (mode, content), counting what is read."""

    files: dict[str, tuple[str, bytes]]
    reads: list[str] = field(default_factory=list)

    def mode(self, path: str) -> str | None:
        entry = self.files.get(path)
        return entry[0] if entry else None

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        return self.files[path][1]


def base(**extra: tuple[str, bytes]) -> MemoryFiles:
    return MemoryFiles(
        {
            "app/cart.py": ("100644", CART.encode()),
            "bin/run": ("100755", b"#!/bin/sh\nexec app\n"),
            **extra,
        }
    )


def refusal(edits: list[Edit], files: MemoryFiles | None = None) -> str:
    with pytest.raises(EditRefused) as caught:
        apply_edits(edits, files or base(), WHERE)
    return str(caught.value)


def test_edits_apply_in_order_and_keep_the_file_mode() -> None:
    edits = [
        Edit(path="app/cart.py", search="item['price']", replace="item.get('price', 0)"),
        Edit(path="./app/cart.py", search="def total", replace="def cart_total"),
        Edit(path="bin/run", search="exec app", replace="exec app --safe"),
    ]
    changed = apply_edits(edits, base(), WHERE)
    assert changed == {
        "app/cart.py": EditedFile(
            "100644",
            CART,
            "def cart_total(items):\n    return sum(item.get('price', 0) for item in items)\n",
        ),
        "bin/run": EditedFile("100755", "#!/bin/sh\nexec app\n", "#!/bin/sh\nexec app --safe\n"),
    }


def test_each_file_is_read_once_and_only_files_the_edits_change_are_returned() -> None:
    files = base(**{"app/noop.py": ("100644", b"x = 1\n")})
    edits = [
        Edit(path="app/cart.py", search="def total", replace="def cart_total"),
        Edit(path="app/cart.py", search="items)\n", replace="items or [])\n"),
        Edit(path="app/noop.py", search="x = 1", replace="x = 1"),
    ]
    changed = apply_edits(edits, files, WHERE)
    assert list(changed) == ["app/cart.py"]
    assert files.reads == ["app/cart.py", "app/noop.py"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            Edit(path="app/cart.py", search="no such text", replace="x"),
            f"edit 1 (app/cart.py): the search text is not found in the file at {WHERE} "
            f"(it must occur exactly once)",
        ),
        (
            Edit(path="app/cart.py", search="item", replace="x"),
            f"edit 1 (app/cart.py): the search text is found more than once in the file at "
            f"{WHERE} (it must occur exactly once)",
        ),
        (
            Edit(path="app/basket.py", search="x", replace="y"),
            f"edit 1 (app/basket.py): no such file at {WHERE} (edit an existing file)",
        ),
        (
            Edit(path="app", search="x", replace="y"),
            f"edit 1 (app): not a regular file at {WHERE} (mode 040000)",
        ),
        (
            Edit(path="app/link.py", search="x", replace="y"),
            f"edit 1 (app/link.py): not a regular file at {WHERE} (mode 120000)",
        ),
        (
            Edit(path="app/logo.png", search="x", replace="y"),
            f"edit 1 (app/logo.png): the file at {WHERE} is not UTF-8 text",
        ),
        (
            Edit(path="app/cart.py", search="def total", replace="def total"),
            "the edits change nothing (each replacement equals its search text)",
        ),
    ],
)
def test_edits_that_do_not_apply_exactly_are_refused(edit: Edit, expected: str) -> None:
    files = base(
        app=("040000", b""),
        **{"app/link.py": ("120000", b"/etc/passwd"), "app/logo.png": ("100644", b"\x89PNG\xff")},
    )
    assert refusal([edit], files) == expected
    assert "app/link.py" not in files.reads, "a symlink's target is never read"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.py", "app/../../x.py", "app/../.git/config", ".git/HEAD",
             "app\\cart.py", "", "."],
)  # fmt: skip
def test_paths_outside_the_repository_or_into_git_are_refused(path: str) -> None:
    assert repo_path(path) is None
    edit = Edit.model_construct(path=path, search="x", replace="y")
    assert refusal([edit]) == (
        f"edit 1 ({path}): the path must be relative and stay inside the repository"
    )


def test_paths_are_normalised() -> None:
    assert repo_path("./app//cart.py") == "app/cart.py"
    assert repo_path("app/../app/cart.py") == "app/cart.py"
    assert repo_path("app/.gitignore") == "app/.gitignore"


def test_the_first_failing_edit_is_named() -> None:
    edits = [
        Edit(path="app/cart.py", search="def total", replace="def cart_total"),
        Edit(path="app/basket.py", search="x", replace="y"),
        Edit(path="../x.py", search="x", replace="y"),
    ]
    assert refusal(edits).startswith("edit 2 (app/basket.py): no such file")


def test_an_edit_that_overlaps_an_earlier_one_is_refused() -> None:
    edits = [
        Edit(path="app/cart.py", search="item['price']", replace="item.get('price', 0)"),
        Edit(path="app/cart.py", search="['price'] for", replace="['cost'] for"),
    ]
    assert refusal(edits) == (
        "edit 2 (app/cart.py): the search text overlaps an earlier edit of the same file"
    )


def test_a_search_text_an_earlier_edit_repeats_is_refused() -> None:
    edits = [
        Edit(path="app/cart.py", search="def total", replace="# total(items)\ndef total"),
        Edit(path="app/cart.py", search="total(items)", replace="total(items=())"),
    ]
    assert "edit 2 (app/cart.py): the search text overlaps" in refusal(edits)
