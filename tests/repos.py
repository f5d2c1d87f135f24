"""Real git repositories for tests: a bare origin (the service's remote) and a working clone.

    repo = make_service_repo(tmp_path)
    first = repo.commit({"app/cart.py": "..."}, "Add cart", author=ALICE)
    config = repo.config(tmp_path / "home")              # services.checkout.repo = origin path
    config = repo.config(tmp_path / "home", via="url")   # ... = file:// URL of the origin

`serve_over_http(tmp_path, user=..., token=...)` serves the bare repositories under a folder
with git's smart HTTP protocol behind Basic auth, for URLs that carry credentials.

Commits carry the given author and a date (by default one hour after the previous commit,
from 2026-01-05), so history-based tests are deterministic.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from remedy.config import RemedyConfig, ServiceConfig


@dataclass(frozen=True)
class Author:
    name: str
    email: str


ALICE = Author("Alice Archer", "alice@example.com")
BOB = Author("Bob Baker", "bob@example.com")
CAROL = Author("Carol Cooper", "carol@example.com")

FIRST_COMMIT_DATE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in `cwd` isolated from the caller's GIT_* variables; return stripped stdout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    clean.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=clean, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass
class ServiceRepo:
    service: str
    branch: str
    origin: Path
    work: Path

    @property
    def url(self) -> str:
        """The origin as a file:// URL."""
        return self.origin.as_uri()

    def commit(
        self,
        files: Mapping[str, str | None],
        message: str,
        *,
        author: Author = ALICE,
        date: datetime | None = None,
        push: bool = True,
    ) -> str:
        """Write (text) or delete (None) files, commit them as `author`, push; return the sha."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                git(self.work, "rm", "-q", "--", name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            git(self.work, "add", "--", name)
        if date is None:
            date = FIRST_COMMIT_DATE + timedelta(hours=self.commit_count())
        stamp = date.isoformat()
        identity = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
            "GIT_COMMITTER_DATE": stamp,
        }
        git(self.work, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message, env=identity)
        if push:
            git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
        return self.head()

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def commit_count(self) -> int:
        has_head = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD"],
            cwd=self.work,
            capture_output=True,
            check=False,
        )
        return int(git(self.work, "rev-list", "--count", "HEAD")) if has_head.returncode == 0 else 0

    def remote_branch(self, branch: str) -> str | None:
        """The sha of `branch` in the origin, or None."""
        out = git(self.origin, "for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}")
        return out or None

    def config(
        self,
        home: Path,
        *,
        via: Literal["path", "url"] = "path",
        **service: Any,
    ) -> RemedyConfig:
        """A RemedyConfig whose only service is this repository; `service` overrides its keys."""
        settings = {"repo": str(self.origin) if via == "path" else self.url, "branch": self.branch}
        settings.update(service)
        return RemedyConfig(home=str(home), services={self.service: ServiceConfig(**settings)})


def make_service_repo(
    tmp_path: Path, *, service: str = "checkout", branch: str = "main"
) -> ServiceRepo:
    """An empty bare origin at tmp_path/<service>.git and a clone at tmp_path/<service>-work."""
    origin = tmp_path / f"{service}.git"
    work = tmp_path / f"{service}-work"
    git(tmp_path, "init", "-q", "--bare", f"--initial-branch={branch}", str(origin))
    git(tmp_path, "init", "-q", f"--initial-branch={branch}", str(work))
    git(work, "remote", "add", "origin", str(origin))
    return ServiceRepo(service=service, branch=branch, origin=origin, work=work)


@contextlib.contextmanager
def serve_over_http(root: Path, *, user: str, token: str) -> Iterator[str]:
    """Serve the bare repositories under `root` through `git http-backend`, Basic auth required.

    Yields the base URL (http://127.0.0.1:PORT); `<base>/<name>.git` is `root/<name>.git`.
    Pushes are allowed for the authenticated user.
    """
    expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    class GitHttp(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._backend()

        def do_POST(self) -> None:
            self._backend()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _backend(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", ""),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": user,
                "REMOTE_ADDR": "127.0.0.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            ).stdout
            separator = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
            head, _, payload = out.partition(separator)
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), GitHttp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
