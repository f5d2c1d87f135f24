"""The code index on real git repositories made here: incremental, persistent, hybrid.

Both stores run the same scenarios: the embedded Qdrant Edge store and the Qdrant server
path through qdrant-client's in-memory mode (the same API a server answers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.index import IndexActivities
from remedy.artifacts import ArtifactStore
from remedy.config import EmbeddingsConfig, RemedyConfig, ServiceConfig
from remedy.index import core as index_core
from remedy.index.core import CodeIndex
from remedy.index.edge_store import EdgeStore
from remedy.index.embed import Embedder, get_embedder, lexical_terms
from remedy.index.focus import focus_paths
from remedy.index.related import Located
from remedy.index.server_store import ServerStore
from remedy.index.store import VectorStore
from remedy.models import (
    ErrorInfo,
    Frame,
    IndexRequest,
    RecordIncidentRequest,
    RelatedRequest,
    Worktree,
)
from tests.repos import git

# qdrant-client's in-memory mode has no payload indexes; a real server uses them.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

CART = textwrap.dedent(
    '''\
    """Cart arithmetic."""

    TAX_RATE = 0.2


    def line_total(line):
        """Price of one cart line: unit price times quantity."""
        return line["price"] * line["qty"]


    def cart_total(lines):
        """Total of the whole cart including tax."""
        return sum(line_total(line) for line in lines) * (1 + TAX_RATE)


    def apply_coupon(total, coupon):
        """Take a coupon's percentage off the total."""
        return total * (1 - coupon["percent"] / 100)
    '''
)
USERS = textwrap.dedent(
    '''\
    import hashlib


    def hash_password(password, salt):
        """Derive the stored hash of a user's password."""
        return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)


    def send_welcome_email(user):
        """Email a new user their welcome message."""
        return f"Welcome {user['name']}"
    '''
)
CHECKOUT = textwrap.dedent(
    '''\
    from app.cart import cart_total


    def checkout(session):
        """Charge the customer for the cart in their session."""
        amount = cart_total(session["cart"])
        return {"charged": amount, "currency": session["currency"]}
    '''
)


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "--quiet", "--initial-branch=main")

    def commit(self, files: dict[str, str | bytes | None], message: str = "change") -> str:
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        git(self.path, "add", "--all", "--force")
        git(self.path, "-c", "user.name=T", "-c", "user.email=t@example.com",
            "commit", "--quiet", "-m", message)  # fmt: skip
        return git(self.path, "rev-parse", "HEAD")


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.dimension = inner.dimension
        self.backend = inner.backend
        self.batch_size = inner.batch_size
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder(EmbeddingsConfig())


@pytest.fixture(params=["edge", "server"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], VectorStore]]:
    """Opens the store anew each call, as every activity does; the data must persist."""
    if request.param == "edge":
        yield lambda: EdgeStore(tmp_path / "index")
        return
    client = QdrantClient(":memory:")
    yield lambda: ServerStore(client, "test", owns_client=False)
    client.close()


def _index(open_store: Callable[[], VectorStore], embedder: object) -> CodeIndex:
    return CodeIndex(open_store(), embedder, keep_commits=3)  # type: ignore[arg-type]


def test_reindex_embeds_only_the_changed_chunks(
    tmp_path: Path, open_store: Callable[[], VectorStore], embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    first = repo.commit({"app/cart.py": CART, "app/users.py": USERS, "app/checkout.py": CHECKOUT})
    counting = CountingEmbedder(embedder)

    index = _index(open_store, counting)
    cold = index.index("shop", repo.path, first)
    assert cold.files == 3 and cold.embedded == cold.chunks and cold.reused == 0
    assert len(counting.texts) == cold.chunks
    again = index.index("shop", repo.path, first)
    assert again.embedded == 0 and again.reused == cold.chunks
    index.store.close()

    # One function changes in one file; a line is added above another (it only moves).
    changed = CART.replace('line["price"] * line["qty"]', 'line["price"] * line.get("qty", 1)')
    second = repo.commit({"app/cart.py": changed, "app/users.py": "# users\n" + USERS})
    counting.texts.clear()
    index = _index(open_store, counting)
    warm = index.index("shop", repo.path, second)
    assert warm.embedded == 1 and len(counting.texts) == 1
    assert "line_total" in counting.texts[0] and 'line.get("qty", 1)' in counting.texts[0]
    assert warm.chunks == cold.chunks and warm.reused == cold.chunks - 1 and warm.deleted == 1

    hit = index.search("shop", second, ["hash a user's password"], 3)[0]
    assert (hit.symbol, hit.path) == ("hash_password", "app/users.py")
    assert (hit.start_line, hit.end_line) == (5, 7)  # moved down by the new first line
    index.store.close()


def test_removed_code_stops_matching_and_old_commits_age_out(
    tmp_path: Path, open_store: Callable[[], VectorStore], embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    first = repo.commit({"app/cart.py": CART})
    index = _index(open_store, embedder)
    index.index("shop", repo.path, first)
    without = CART[: CART.index("def apply_coupon")].rstrip() + "\n"
    second = repo.commit({"app/cart.py": without})
    result = index.index("shop", repo.path, second)
    assert result.deleted == 1 and result.embedded == 0

    query = ["take a coupon percentage off the total"]
    assert "apply_coupon" not in {h.symbol for h in index.search("shop", second, query, 5)}
    # An incident still running the first commit keeps seeing the code it runs.
    assert index.search("shop", first, query, 1)[0].symbol == "apply_coupon"

    # Past `keep_commits` (3 here) the first commit is forgotten, and its only chunk purged.
    third = repo.commit({"README.md": "# Shop\n\nSells things.\n"})
    fourth = repo.commit({"README.md": "# Shop\n\nSells many things.\n"})
    index.index("shop", repo.path, third)
    purging = index.index("shop", repo.path, fourth)
    assert index.indexed_commits("shop") == [second, third, fourth]
    assert purging.purged >= 2  # the apply_coupon chunk and the first cart.py version
    assert index.search("shop", first, query, 5) == []
    index.store.close()


def test_skips_vendored_generated_binary_and_ignored_files(
    tmp_path: Path, embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    sha = repo.commit(
        {
            ".gitignore": "out/\n",
            "app/cart.py": CART,
            "vendor/requests/api.py": USERS,
            "api/shop_pb2.py": USERS,
            "app/blob.py": b"\x00\x01binary",
            "app/gen.py": "# Code generated by a tool. DO NOT EDIT.\n" + USERS,
            "out/cart_copy.py": CART,  # tracked although ignored: still not indexed
        }
    )
    index = CodeIndex(EdgeStore(tmp_path / "index"), embedder)
    result = index.index("shop", repo.path, sha)
    hits = index.search("shop", sha, ["password hash", "cart total"], 20)
    assert {h.path for h in hits} == {"app/cart.py"}
    assert result.files == 1 and result.skipped_files == 6
    index.store.close()


def test_lexical_terms_split_identifiers() -> None:
    terms = lexical_terms("parse_frame HTTPClient DB5001")
    assert {"parse_frame", "parse", "frame", "httpclient", "http", "client", "db5001"} <= set(terms)


# ---------------------------------------------------------------------------- activities


def _config(tmp_path: Path, repo: Repo) -> RemedyConfig:
    return RemedyConfig(
        home=str(tmp_path / "home"), services={"shop": ServiceConfig(repo=str(repo.path))}
    )


def _worktree(repo: Repo, commit: str) -> Worktree:
    return Worktree(service="shop", path=str(repo.path), commit=commit, branch="main",
                    commit_source="branch_head")  # fmt: skip


async def test_activities_index_relate_and_remember(tmp_path: Path, embedder: Embedder) -> None:
    repo = Repo(tmp_path / "shop")
    sha = repo.commit({"app/cart.py": CART, "app/users.py": USERS, "app/checkout.py": CHECKOUT})
    config = _config(tmp_path, repo)
    artifacts = ArtifactStore(config.artifacts_dir)
    acts = IndexActivities(config, artifacts)
    env = ActivityEnvironment()
    indexed = env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha)))
    assert indexed.repo == str(repo.path) and indexed.embedded == indexed.chunks > 0

    request = RelatedRequest(
        incident_id="shop-0123456789abcdef-00000001",
        worktree=_worktree(repo, sha),
        error=ErrorInfo(type="KeyError", message="'qty'"),
        frames=[
            Frame(file="/srv/app/checkout.py", line=6, function="checkout"),
            Frame(file="/srv/app/cart.py", line=13, function="cart_total"),
            Frame(file="/srv/app/cart.py", line=8, function="line_total"),
        ],
    )
    related = env.run(acts.find_related, request)
    symbols = [c.symbol for c in related.related_code]
    # The frames' own functions are left out; the code around them is what is found.
    assert not {"checkout", "cart_total", "line_total"} & set(symbols)
    assert related.frame_chunks >= 2
    assert "apply_coupon" in symbols[:3]
    assert all(0 < c.score <= 1 for c in related.related_code)
    assert related.artifact is not None
    stored = artifacts.get_json(related.artifact)
    assert {q["source"] for q in stored["queries"]} >= {"error", "functions"}
    assert any("line.get" not in q["text"] and "qty" in q["text"] for q in stored["queries"])
    assert {f["symbol"] for f in stored["frames"]} >= {"cart_total", "line_total"}
    assert related.similar_incidents == []

    patch = artifacts.put_text("shop-aaaaaaaaaaaaaaaa-00000001/patch.diff", "-x\n+y\n")
    recorded = env.run(
        acts.record_incident,
        RecordIncidentRequest(
            incident_id="shop-aaaaaaaaaaaaaaaa-00000001",
            service="shop",
            fingerprint="aaaaaaaaaaaaaaaa",
            error=ErrorInfo(type="KeyError", message="'qty'"),
            frames=[Frame(file="app/cart.py", line=8, function="line_total")],
            summary="Cart lines without a quantity crashed the total",
            outcome="approved",
            reason="default the quantity to 1",
            patch=patch,
        ),
    )
    env.run(
        acts.record_incident,
        RecordIncidentRequest(
            incident_id="shop-bbbbbbbbbbbbbbbb-00000001", service="shop",
            fingerprint="bbbbbbbbbbbbbbbb", error=ErrorInfo(type="SMTPError", message="timeout"),
            summary="Welcome emails time out", outcome="rejected", reason="not our bug",
        ),
    )  # fmt: skip
    similar = env.run(acts.find_related, request).similar_incidents
    assert similar[0].incident_id == recorded.incident_id
    assert (similar[0].outcome, similar[0].summary.startswith("Cart lines")) == ("approved", True)
    assert similar[0].score > similar[-1].score


async def test_index_repo_resumes_from_its_heartbeat(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "shop")
    sha = repo.commit({"app/cart.py": CART, "app/users.py": USERS, "app/checkout.py": CHECKOUT})
    acts = IndexActivities(_config(tmp_path, repo), ArtifactStore(tmp_path / "artifacts"))
    monkeypatch.setattr(index_core, "EMBED_GROUP", 2)
    beats: list[dict[str, object]] = []

    class WorkerLost(Exception):
        pass

    def crash_after_first_group(*details: object) -> None:
        beats.append(details[0])  # type: ignore[arg-type]
        if details[0]["embedded"] == 2:  # type: ignore[index]
            raise WorkerLost

    first = ActivityEnvironment()
    first.on_heartbeat = crash_after_first_group
    with pytest.raises(WorkerLost):
        first.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha)))

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=[beats[-1]], attempt=2)
    result = retry.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha)))
    assert result.embedded == result.chunks and result.reused == 0
    # The retry embedded only what the lost attempt had not stored.
    assert beats[-1]["total"] == result.chunks


async def test_a_failing_test_finds_the_code_under_test_before_other_tests(
    tmp_path: Path, embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    test_cart = (
        "from app.cart import cart_total\n\n\n"
        "def test_cart_total_counts_quantities():\n"
        "    assert cart_total([{'price': 2, 'qty': 3}]) == 6\n\n\n"
        "def test_cart_total_of_nothing():\n"
        "    assert cart_total([]) == 0\n"
    )
    test_users = "def test_cart_total_for_users():\n    assert cart_total([]) == 0\n"
    sha = repo.commit(
        {"app/cart.py": CART, "tests/test_cart.py": test_cart, "tests/test_users.py": test_users}
    )
    config = _config(tmp_path, repo)
    acts = IndexActivities(config, ArtifactStore(config.artifacts_dir))
    env = ActivityEnvironment()
    env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha)))
    related = env.run(
        acts.find_related,
        RelatedRequest(
            incident_id="shop-0123456789abcdef-00000002",
            worktree=_worktree(repo, sha),
            error=ErrorInfo(type="AssertionError", message="assert 5 == 6"),
            frames=[
                Frame(
                    file="tests/test_cart.py", line=5, function="test_cart_total_counts_quantities"
                )
            ],
            limit=3,
        ),
    )
    paths = [c.path for c in related.related_code]
    assert paths and paths[0] == "app/cart.py", paths


HOLD_STORE = """
import sys, time
from pathlib import Path
from remedy.index.edge_store import EdgeStore
store = EdgeStore(Path(sys.argv[1]), holder="`remedy index big`")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
store.close()
"""


@contextlib.contextmanager
def store_held_by_another_process(root: Path, seconds: float) -> Iterator[None]:
    """A second process holding the embedded store, as `remedy index BIGREPO` does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(root), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=10)


async def test_an_incident_does_not_queue_behind_a_long_index_run(
    tmp_path: Path, embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    sha = repo.commit({"app/cart.py": CART})
    config = _config(tmp_path, repo)
    acts = IndexActivities(config, ArtifactStore(config.artifacts_dir), incident_lock_timeout_s=2)
    env = ActivityEnvironment()
    beats: list[dict[str, str]] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])

    with store_held_by_another_process(config.home_dir / config.qdrant.path, 60):
        started = time.monotonic()
        with pytest.raises(ApplicationError) as failure:
            env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha)))
        waited = time.monotonic() - started

    assert waited < 10, "the incident's index waits the short incident timeout, not minutes"
    assert failure.value.type == "IndexBusy" and failure.value.non_retryable
    # The reason names who holds the index, for the Temporal UI and the logs.
    assert "in use by `remedy index big` (pid " in failure.value.message
    assert beats[0]["stage"] == "waiting for the code index"
    assert beats[0]["holder"].startswith("`remedy index big` (pid ")
    # Once the other run is over, the same incident indexes normally.
    assert env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha))).chunks > 0


def test_the_focus_is_the_frames_their_imports_and_their_packages() -> None:
    sizes = {"app/__init__.py": 10, "app/checkout.py": 900, "app/cart.py": 300,
             "app/util/money.py": 200, "lib/far.py": 5000, "lib/other.py": 100,
             "README.md": 50, "src/shop/tax.py": 400}  # fmt: skip
    sources = {
        "lib/far.py": "from app.util import money\nfrom . import other\nimport shop.tax\n",
        "app/checkout.py": "from .cart import cart_total\nimport json\n",
    }
    located = [
        Located(Frame(file="/srv/lib/far.py", line=3), "lib/far.py"),
        Located(Frame(file="/srv/app/checkout.py", line=6), "app/checkout.py"),
    ]

    def read(path: str) -> str:
        return sources.get(path, "")

    # The frames' files (innermost first), then what they import (absolute, relative, under
    # a src/ root), then their packages' files; never README.md.
    assert focus_paths(located, sizes, read) == [
        "lib/far.py", "app/checkout.py", "app/util/money.py", "lib/other.py", "src/shop/tax.py",
        "app/cart.py", "app/__init__.py",
    ]  # fmt: skip
    # Beyond the frames, only what fits the budget, most useful first.
    assert focus_paths(located, sizes, read, budget_bytes=350) == [
        "lib/far.py", "app/checkout.py", "app/util/money.py", "lib/other.py", "app/__init__.py"
    ]  # fmt: skip
    assert focus_paths(located, sizes, lambda path: "def broken(:\n", budget_bytes=0) == [
        "lib/far.py", "app/checkout.py"
    ]  # fmt: skip


async def test_a_cold_repository_indexes_the_focus_first_then_completes(
    tmp_path: Path, embedder: Embedder
) -> None:
    repo = Repo(tmp_path / "shop")
    bulk = {f"app/reports/r{n:02d}.py": f"def report_{n}(rows):\n    return len(rows) + {n}\n"
            for n in range(30)}  # fmt: skip
    sha = repo.commit({"app/cart.py": CART, "app/checkout.py": CHECKOUT, **bulk})
    config = _config(tmp_path, repo)
    acts = IndexActivities(config, ArtifactStore(config.artifacts_dir))
    env = ActivityEnvironment()
    frames = [Frame(file="/srv/app/checkout.py", line=6, function="checkout")]
    focused = env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha), frames=frames))
    assert not focused.complete
    assert focused.files == 2  # checkout.py and the cart it imports, not the 30 reports

    related = env.run(
        acts.find_related,
        RelatedRequest(
            incident_id="shop-0123456789abcdef-00000001",
            worktree=_worktree(repo, sha),
            error=ErrorInfo(type="KeyError", message="'qty'"),
            frames=frames,
        ),
    )
    assert (related.index_commit, related.index_complete) == (sha, False)
    assert any(c.path == "app/cart.py" for c in related.related_code)

    # Another incident on the same still-partial repository stays on the focus path.
    again = env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, sha), frames=frames))
    assert not again.complete and again.embedded == 0

    full = env.run(
        acts.index_repo, IndexRequest(worktree=_worktree(repo, sha), frames=frames, complete=True)
    )
    assert full.complete and full.files == 32 and full.reused == focused.chunks
    with index_core.code_index(config) as index:
        assert index.partial_commits(str(repo.path)) == []
    # With a complete commit, a later incident indexes the whole (incremental) tree.
    later = repo.commit({"app/reports/r00.py": "def report_0(rows):\n    return 0\n"})
    after = env.run(acts.index_repo, IndexRequest(worktree=_worktree(repo, later), frames=frames))
    assert after.complete and after.embedded == 1
