"""A loopback GitHub: the REST endpoints Remedy uses, for the real PyGithub client.

Repositories hold real-looking git data (blobs, trees, commits, refs), pull requests, issues,
their comments and labels. Every `url` field points back at this server's host and port,
because PyGithub refuses to follow a URL to another host. Auth is a bearer token, or a GitHub
App: a JWT signed with the App's private key buys an installation token.

Pull requests are listed as GitHub lists them: `merged_at`, `merge_commit_sha` and `state` in
the listing, `merged` only when one is read by number (null `merge_commit_sha` until merged,
where GitHub would show a test merge). Tests merge and close them as a person would
(`merge_pull`, `close_pull`).

Faults are keyed "METHOD route", e.g. `fail("POST git/refs", "drop")` or
`fail("POST pulls", "respond", status=502)`; routes: repo, git/ref, git/refs, git/commits,
git/trees, git/blobs, pulls, issues, issues/comments, labels, installation, access_tokens.
`hide` makes a lookup answer 404 (or an empty list) once. It runs on its own event loop in a
thread (tests/fakes/loopback_thread.py).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import time
import uuid
from typing import Any

import jwt
from aiohttp import web

from tests.fakes.loopback_thread import Fault, LoopbackServer

TOKEN = "ghp_loopbacktoken"
BOT_LOGIN = "remedy-bot"


class _Repo:
    def __init__(self, owner: str, name: str, default_branch: str) -> None:
        self.owner = owner
        self.name = name
        self.default_branch = default_branch
        self.objects: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, str] = {}
        self.issues: list[dict[str, Any]] = []
        self.comments: dict[int, list[dict[str, Any]]] = {}

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class GitHubServer(LoopbackServer):
    def __init__(
        self,
        *,
        token: str = TOKEN,
        app_id: str | None = None,
        app_public_key: str | None = None,
        installation_id: int = 4242,
        drafts_supported: bool = True,
    ) -> None:
        super().__init__()
        self.tokens = {token}
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.installation_id = installation_id
        self.drafts_supported = drafts_supported
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1000)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._dispatch)

    @property
    def api_url(self) -> str:
        """What `[github] api_url` / Github(base_url=...) points at."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ seeding and inspection

    def add_repo(self, full_name: str, files: dict[str, str], *, branch: str = "main") -> str:
        """Create a repository whose `branch` holds one commit with `files`; return its sha."""
        owner, name = full_name.split("/")
        with self._lock:
            repo = self.repos[full_name] = _Repo(owner, name, branch)
            tree = self._write_tree(
                repo, [], {path: self._blob(repo, text) for path, text in files.items()}
            )
            sha = self._commit(repo, "initial commit", tree, [])
            repo.refs[f"refs/heads/{branch}"] = sha
            return sha

    def push(self, full_name: str, files: dict[str, str], *, branch: str = "main") -> str:
        """Advance `branch` (made from the default branch if new) by someone else's commit."""
        with self._lock:
            repo = self.repos[full_name]
            parent = (
                repo.refs.get(f"refs/heads/{branch}")
                or repo.refs[f"refs/heads/{repo.default_branch}"]
            )
            base = repo.objects[repo.objects[parent]["tree"]]["entries"]
            tree = self._write_tree(repo, base, {p: self._blob(repo, t) for p, t in files.items()})
            sha = self._commit(repo, "a human's change", tree, [parent])
            repo.refs[f"refs/heads/{branch}"] = sha
            return sha

    def merge_pull(self, full_name: str, number: int, *, delete_branch: bool = False) -> str:
        """Merge pull request `number` as GitHub's merge button does: a merge commit on the base
        branch (with the head's tree: the fake merges no content); return its sha."""
        with self._lock:
            repo = self.repos[full_name]
            issue = self._issue(repo, number)
            assert issue is not None and "pull" in issue, f"no pull request #{number}"
            pull = issue["pull"]
            base_ref, head_ref = f"refs/heads/{pull['base']}", f"refs/heads/{pull['head']}"
            head = repo.refs.get(head_ref, pull["head_sha"])
            message = f"Merge pull request #{number} from {repo.owner}/{pull['head']}"
            sha = self._commit(
                repo, message, repo.objects[head]["tree"], [repo.refs[base_ref], head]
            )
            repo.refs[base_ref] = sha
            issue["state"], issue["closed_at"] = "closed", _now()
            pull.update(head_sha=head, merged_at=issue["closed_at"], merge_commit_sha=sha)
            if delete_branch:
                repo.refs.pop(head_ref, None)
            return sha

    def close_pull(self, full_name: str, number: int) -> None:
        """Close pull request `number` unmerged."""
        with self._lock:
            issue = self._issue(self.repos[full_name], number)
            assert issue is not None and "pull" in issue, f"no pull request #{number}"
            issue["state"], issue["closed_at"] = "closed", _now()

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.repos[full_name].comments.get(number, []))

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(i) for i in self.repos[full_name].issues if "pull" in i]

    def issues(self, full_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(i) for i in self.repos[full_name].issues if "pull" not in i]

    def branches(self, full_name: str) -> dict[str, str]:
        with self._lock:
            return {
                ref.removeprefix("refs/heads/"): sha
                for ref, sha in self.repos[full_name].refs.items()
            }

    def file_at(self, full_name: str, commit: str, path: str) -> str | None:
        with self._lock:
            repo = self.repos[full_name]
            entries = repo.objects[repo.objects[commit]["tree"]]["entries"]
            *folders, leaf = path.split("/")
            for folder in folders:
                entry = next((e for e in entries if e["path"] == folder), None)
                if entry is None:
                    return None
                entries = repo.objects[entry["sha"]]["entries"]
            entry = next((e for e in entries if e["path"] == leaf), None)
            return None if entry is None else repo.objects[entry["sha"]]["content"].decode()

    def commit_message(self, full_name: str, commit: str) -> str:
        with self._lock:
            message: str = self.repos[full_name].objects[commit]["message"]
            return message

    def writes(self) -> list[str]:
        with self._lock:
            return [f"{m} {p}" for m, p in self.requests if m != "GET"]

    # ------------------------------------------------------------------ git objects

    @staticmethod
    def _store(repo: _Repo, kind: str, body: dict[str, Any], raw: bytes) -> str:
        sha = hashlib.sha1(f"{kind} {len(raw)}\0".encode() + raw).hexdigest()
        repo.objects.setdefault(sha, {"type": kind, **body})
        return sha

    def _blob(self, repo: _Repo, text: str | bytes) -> dict[str, str]:
        raw = text.encode() if isinstance(text, str) else text
        sha = self._store(repo, "blob", {"content": raw}, raw)
        return {"mode": "100644", "type": "blob", "sha": sha}

    def _write_tree(
        self, repo: _Repo, base: list[dict[str, Any]], updates: dict[str, dict[str, str]]
    ) -> str:
        """A tree: `base` entries with nested `updates` (path -> mode/type/sha) applied."""
        entries = {e["path"]: dict(e) for e in base}
        nested: dict[str, dict[str, dict[str, str]]] = {}
        for path, entry in updates.items():
            head, _, rest = path.partition("/")
            if rest:
                nested.setdefault(head, {})[rest] = entry
            else:
                entries[head] = {"path": head, **entry}
        for folder, inner in nested.items():
            existing = entries.get(folder)
            sub_base = repo.objects[existing["sha"]]["entries"] if existing else []
            entries[folder] = {
                "path": folder,
                "mode": "040000",
                "type": "tree",
                "sha": self._write_tree(repo, sub_base, inner),
            }
        listed = sorted(entries.values(), key=lambda e: e["path"])
        return self._store(repo, "tree", {"entries": listed}, json.dumps(listed).encode())

    def _commit(self, repo: _Repo, message: str, tree: str, parents: list[str]) -> str:
        stamp = _now()
        body = {
            "message": message,
            "tree": tree,
            "parents": parents,
            "author": {"name": BOT_LOGIN, "email": "bot@example.com", "date": stamp},
        }
        raw = json.dumps({**body, "nonce": uuid.uuid4().hex}).encode()
        return self._store(repo, "commit", body, raw)

    # ------------------------------------------------------------------ JSON shapes

    def _url(self, path: str) -> str:
        return f"{self.api_url}{path}"

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        return {
            "id": abs(hash(repo.full_name)) % 10**8,
            "node_id": f"R_{repo.name}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": True,
            "owner": {
                "login": repo.owner,
                "id": 1,
                "type": "Organization",
                "url": self._url(f"/users/{repo.owner}"),
            },
            "html_url": self._url(f"/{repo.full_name}"),
            "url": self._url(f"/repos/{repo.full_name}"),
            "default_branch": repo.default_branch,
        }

    def _ref_json(self, repo: _Repo, ref: str) -> dict[str, Any]:
        sha = repo.refs[ref]
        return {
            "ref": ref,
            "node_id": f"REF_{sha[:8]}",
            "url": self._url(f"/repos/{repo.full_name}/git/{ref}"),
            "object": {
                "type": "commit",
                "sha": sha,
                "url": self._url(f"/repos/{repo.full_name}/git/commits/{sha}"),
            },
        }

    def _commit_json(self, repo: _Repo, sha: str) -> dict[str, Any]:
        commit = repo.objects[sha]
        prefix = f"/repos/{repo.full_name}/git"
        return {
            "sha": sha,
            "node_id": f"C_{sha[:8]}",
            "url": self._url(f"{prefix}/commits/{sha}"),
            "html_url": self._url(f"/{repo.full_name}/commit/{sha}"),
            "message": commit["message"],
            "author": commit["author"],
            "committer": commit["author"],
            "tree": {"sha": commit["tree"], "url": self._url(f"{prefix}/trees/{commit['tree']}")},
            "parents": [
                {"sha": p, "url": self._url(f"{prefix}/commits/{p}")} for p in commit["parents"]
            ],
        }

    def _tree_json(self, repo: _Repo, sha: str) -> dict[str, Any]:
        prefix = f"/repos/{repo.full_name}/git"
        return {
            "sha": sha,
            "url": self._url(f"{prefix}/trees/{sha}"),
            "truncated": False,
            "tree": [
                {**e, "url": self._url(f"{prefix}/{e['type']}s/{e['sha']}")}
                for e in repo.objects[sha]["entries"]
            ],
        }

    def _issue_json(self, repo: _Repo, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        shown = {key: value for key, value in issue.items() if key not in ("pull", "label_names")}
        shown.update(
            {
                "url": self._url(f"/repos/{repo.full_name}/issues/{number}"),
                "html_url": self._url(f"/{repo.full_name}/issues/{number}"),
                "labels": [self._label_json(repo, name) for name in issue["label_names"]],
                "user": {"login": BOT_LOGIN, "id": 7, "url": self._url(f"/users/{BOT_LOGIN}")},
            }
        )
        if "pull" in issue:
            shown["pull_request"] = {"url": self._url(f"/repos/{repo.full_name}/pulls/{number}")}
        return shown

    def _comment_json(self, repo: _Repo, number: int, comment: dict[str, Any]) -> dict[str, Any]:
        issue = self._issue(repo, number)
        page = "pull" if issue is not None and "pull" in issue else "issues"
        return {
            **comment,
            "node_id": f"IC_{comment['id']}",
            "url": self._url(f"/repos/{repo.full_name}/issues/comments/{comment['id']}"),
            "html_url": self._url(
                f"/{repo.full_name}/{page}/{number}#issuecomment-{comment['id']}"
            ),
            "issue_url": self._url(f"/repos/{repo.full_name}/issues/{number}"),
            "user": {"login": BOT_LOGIN, "id": 7, "url": self._url(f"/users/{BOT_LOGIN}")},
            "author_association": "NONE",
        }

    def _label_json(self, repo: _Repo, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "color": "ededed",
            "url": self._url(f"/repos/{repo.full_name}/labels/{name}"),
        }

    def _pull_json(
        self, repo: _Repo, issue: dict[str, Any], *, listed: bool = False
    ) -> dict[str, Any]:
        number = issue["number"]
        pull = issue["pull"]
        head_sha = repo.refs.get(f"refs/heads/{pull['head']}", pull["head_sha"])
        merged_at = pull.get("merged_at")
        # GitHub's listing leaves out `merged` (and mergeable, comments...); a read has it.
        merged = {} if listed else {"merged": merged_at is not None}
        return {
            **self._issue_json(repo, issue),
            "url": self._url(f"/repos/{repo.full_name}/pulls/{number}"),
            "html_url": self._url(f"/{repo.full_name}/pull/{number}"),
            "issue_url": self._url(f"/repos/{repo.full_name}/issues/{number}"),
            "draft": pull["draft"],
            **merged,
            "merged_at": merged_at,
            "merge_commit_sha": pull.get("merge_commit_sha"),
            "head": {
                "label": f"{repo.owner}:{pull['head']}",
                "ref": pull["head"],
                "sha": head_sha,
                "repo": self._repo_json(repo),
            },
            "base": {
                "label": f"{repo.owner}:{pull['base']}",
                "ref": pull["base"],
                "sha": repo.refs[f"refs/heads/{pull['base']}"],
                "repo": self._repo_json(repo),
            },
        }

    # ------------------------------------------------------------------ routing

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            body = await request.json()
        with self._lock:
            self.requests.append((request.method, path))
        route, args = _route(request.method, path)
        if route is None:
            return _error(404, "Not Found")
        key = f"{request.method} {route}"
        if route in ("installation", "access_tokens"):
            denied = self._check_jwt(request)
        else:
            denied = self._check_token(request)
        if denied is not None:
            return denied
        fault = self.take_fault(key)
        if fault is not None and fault.mode == "respond":
            return web.json_response(
                fault.body or {"message": f"injected {fault.status}"},
                status=fault.status,
                headers=fault.headers,
            )
        with self._lock:
            response = self._handle(route, request, args, body, fault)
        await self.after_write(request, fault)
        return response

    def _check_token(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or token not in self.tokens:
            return _error(401, "Bad credentials")
        return None

    def _check_jwt(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.app_public_key is None:
            return _error(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(token, self.app_public_key, algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return _error(401, f"A JSON web token could not be decoded: {exc}")
        if str(claims.get("iss")) != str(self.app_id):
            return _error(401, "'Issuer' claim ('iss') must be the App's id")
        return None

    def _handle(
        self,
        route: str,
        request: web.Request,
        args: dict[str, str],
        body: Any,
        fault: Fault | None,
    ) -> web.Response:
        hidden = fault is not None and fault.mode == "hide"
        if route == "access_tokens":
            if int(args["installation"]) != self.installation_id:
                return _error(404, "Not Found")
            token = f"ghs_{uuid.uuid4().hex}"
            self.tokens.add(token)
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            return web.json_response({"token": token, "expires_at": expires}, status=201)
        repo = self.repos.get(f"{args['owner']}/{args['repo']}")
        if repo is None:
            return _error(404, "Not Found")
        method = request.method
        if route == "installation":
            return web.json_response(
                {
                    "id": self.installation_id,
                    "app_id": int(self.app_id or 0),
                    "account": {"login": repo.owner},
                    "target_type": "Organization",
                }
            )
        if route == "repo":
            return web.json_response(self._repo_json(repo))
        if route == "git/ref":
            ref = "refs/" + args["ref"]
            if hidden or ref not in repo.refs:
                return _error(404, "Not Found")
            return web.json_response(self._ref_json(repo, ref))
        if route == "git/refs" and method == "POST":
            if body["ref"] in repo.refs:
                return _error(422, "Reference already exists")
            if body["sha"] not in repo.objects:
                return _error(422, "Object does not exist")
            repo.refs[body["ref"]] = body["sha"]
            return web.json_response(self._ref_json(repo, body["ref"]), status=201)
        if route == "git/blobs":
            if method == "POST":
                raw = (
                    base64.b64decode(body["content"])
                    if body.get("encoding") == "base64"
                    else body["content"].encode()
                )
                sha = self._blob(repo, raw)["sha"]
                return web.json_response(
                    {"sha": sha, "url": self._url(f"/repos/{repo.full_name}/git/blobs/{sha}")},
                    status=201,
                )
            blob = repo.objects.get(args.get("sha", ""))
            if blob is None or blob["type"] != "blob":
                return _error(404, "Not Found")
            return web.json_response(
                {
                    "sha": args["sha"],
                    "size": len(blob["content"]),
                    "encoding": "base64",
                    "content": base64.b64encode(blob["content"]).decode(),
                    "url": self._url(f"/repos/{repo.full_name}/git/blobs/{args['sha']}"),
                }
            )
        if route == "git/trees":
            if method == "POST":
                base = repo.objects[body["base_tree"]]["entries"] if body.get("base_tree") else []
                updates = {
                    e["path"]: {"mode": e["mode"], "type": e["type"], "sha": e["sha"]}
                    for e in body["tree"]
                }
                missing = [u["sha"] for u in updates.values() if u["sha"] not in repo.objects]
                if missing:
                    return _error(422, f"tree.sha {missing[0]} is not a valid blob")
                sha = self._write_tree(repo, base, updates)
                return web.json_response(self._tree_json(repo, sha), status=201)
            if args.get("sha") not in repo.objects:
                return _error(404, "Not Found")
            return web.json_response(self._tree_json(repo, args["sha"]))
        if route == "git/commits":
            if method == "POST":
                if body["tree"] not in repo.objects or any(
                    p not in repo.objects for p in body["parents"]
                ):
                    return _error(422, "Tree or parent does not exist")
                sha = self._commit(repo, body["message"], body["tree"], list(body["parents"]))
                return web.json_response(self._commit_json(repo, sha), status=201)
            if args.get("sha") not in repo.objects:
                return _error(404, "Not Found")
            return web.json_response(self._commit_json(repo, args["sha"]))
        if route == "pulls":
            return self._pulls(repo, request, args, body, hidden)
        if route == "issues":
            return self._issues(repo, request, args, body, hidden)
        if route == "issues/comments":
            return self._comments(repo, request, args, body, hidden)
        if route == "labels":
            issue = self._issue(repo, int(args["number"]))
            if issue is None:
                return _error(404, "Not Found")
            names = body["labels"] if isinstance(body, dict) else body
            issue["label_names"] = sorted({*issue["label_names"], *names})
            return web.json_response([self._label_json(repo, n) for n in issue["label_names"]])
        return _error(404, "Not Found")

    @staticmethod
    def _issue(repo: _Repo, number: int) -> dict[str, Any] | None:
        return next((i for i in repo.issues if i["number"] == number), None)

    def _pulls(
        self, repo: _Repo, request: web.Request, args: dict[str, str], body: Any, hidden: bool
    ) -> web.Response:
        if request.method == "POST":
            head, base = body["head"], body["base"]
            if f"refs/heads/{head}" not in repo.refs:
                return _error(422, "Validation Failed", field="head", code="invalid")
            if body.get("draft") and not self.drafts_supported:
                return _error(422, "Draft pull requests are not supported in this repository.")
            for issue in repo.issues:
                pull = issue.get("pull")
                if pull and pull["head"] == head and issue["state"] == "open":
                    return _error(
                        422,
                        "Validation Failed",
                        code="custom",
                        message=f"A pull request already exists for {repo.owner}:{head}.",
                    )
            issue = {
                "id": next(self._ids),
                "number": len(repo.issues) + 1,
                "state": "open",
                "title": body["title"],
                "body": body.get("body", ""),
                "label_names": [],
                "pull": {
                    "head": head,
                    "base": base,
                    "draft": bool(body.get("draft")),
                    "head_sha": repo.refs[f"refs/heads/{head}"],
                },
            }
            repo.issues.append(issue)
            return web.json_response(self._pull_json(repo, issue), status=201)
        if "number" in args:
            found = self._issue(repo, int(args["number"]))
            if found is None or "pull" not in found:
                return _error(404, "Not Found")
            return web.json_response(self._pull_json(repo, found))
        state = request.query.get("state", "open")
        head = request.query.get("head")
        listed = [
            self._pull_json(repo, i, listed=True)
            for i in repo.issues
            if "pull" in i
            and (state == "all" or i["state"] == state)
            and (head is None or f"{repo.owner}:{i['pull']['head']}" == head)
        ]
        return web.json_response([] if hidden else listed)

    def _issues(
        self, repo: _Repo, request: web.Request, args: dict[str, str], body: Any, hidden: bool
    ) -> web.Response:
        if request.method == "POST":
            issue = {
                "id": next(self._ids),
                "number": len(repo.issues) + 1,
                "state": "open",
                "title": body["title"],
                "body": body.get("body", ""),
                "label_names": sorted(set(body.get("labels", []))),
            }
            repo.issues.append(issue)
            return web.json_response(self._issue_json(repo, issue), status=201)
        if "number" in args:
            found = self._issue(repo, int(args["number"]))
            if found is None:
                return _error(404, "Not Found")
            return web.json_response(self._issue_json(repo, found))
        state = request.query.get("state", "open")
        wanted = {n for n in request.query.get("labels", "").split(",") if n}
        listed = [
            self._issue_json(repo, i)
            for i in repo.issues
            if (state == "all" or i["state"] == state) and wanted <= set(i["label_names"])
        ]
        return web.json_response([] if hidden else listed)

    def _comments(
        self, repo: _Repo, request: web.Request, args: dict[str, str], body: Any, hidden: bool
    ) -> web.Response:
        number = int(args["number"])
        if self._issue(repo, number) is None:
            return _error(404, "Not Found")
        comments = repo.comments.setdefault(number, [])
        if request.method == "POST":
            stamp = _now()
            comment = {
                "id": next(self._ids),
                "body": body["body"],
                "created_at": stamp,
                "updated_at": stamp,
            }
            comments.append(comment)
            return web.json_response(self._comment_json(repo, number, comment), status=201)
        listed = [self._comment_json(repo, number, c) for c in comments]
        return web.json_response([] if hidden else listed)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _error(status: int, text: str, **error: str) -> web.Response:
    body: dict[str, Any] = {"message": text, "documentation_url": "https://docs.github.com/rest"}
    if error:
        body["errors"] = [{"resource": "PullRequest", **error}]
    return web.json_response(body, status=status)


def _route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    """(route name, path arguments) for a REST path, or (None, {}) when it is not served."""
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["app", "installations"] and parts[3] == "access_tokens":
        return "access_tokens", {"installation": parts[2]}
    if len(parts) < 3 or parts[0] != "repos":
        return None, {}
    args = {"owner": parts[1], "repo": parts[2]}
    rest = parts[3:]
    if not rest:
        return "repo", args
    if rest == ["installation"]:
        return "installation", args
    if rest[0] == "git" and len(rest) >= 2:
        kind = rest[1]
        if kind == "ref" and len(rest) > 2:
            return "git/ref", {**args, "ref": "/".join(rest[2:])}
        if kind == "refs" and method == "POST" and len(rest) == 2:
            return "git/refs", args
        if kind in ("commits", "trees", "blobs"):
            return f"git/{kind}", {**args, **({"sha": rest[2]} if len(rest) > 2 else {})}
        return None, {}
    if rest[0] == "pulls":
        return "pulls", {**args, **({"number": rest[1]} if len(rest) > 1 else {})}
    if rest[0] == "issues":
        if len(rest) == 3 and rest[2] == "labels":
            return "labels", {**args, "number": rest[1]}
        if len(rest) == 3 and rest[2] == "comments" and rest[1].isdigit():
            return "issues/comments", {**args, "number": rest[1]}
        return "issues", {**args, **({"number": rest[1]} if len(rest) > 1 else {})}
    return None, {}
