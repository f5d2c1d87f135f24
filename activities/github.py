"""GitHub: the approved change as a draft pull request, and one issue per severe fingerprint;
after pr_opened, the pull request watched until it is merged or closed, and a comment on it
when its fix did not hold.

`GitHubActivities` is the `github` forge (activities/forge.py has the `local` push; the text
of both comes from remedy.render.pull_request). It needs no git credentials on the worker: the
change is written through the Git Data API (blobs, a tree, a commit on the base branch's
current head, the ref `remedy/<incident>`), with a token or a GitHub App installation.

Idempotent by look-before-create: the incident's pull request, then its branch, are looked
for before anything is made; "already exists" answers (422) turn into lookups. The branch's
commit carries the `Remedy-Incident` trailer, so a branch of that name without it belongs to a
person and is never touched. Remedy never merges. The fix-failed comment carries a hidden
marker per (incident, release) that is looked for before one is posted.

Failures: 401/403/404 and validation errors stop retrying with a message naming the fix;
rate limits wait as long as GitHub asks (Retry-After, X-RateLimit-Reset); 5xx and connection
errors are retried by Temporal (PyGithub's own retries and waits are off).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from github import Auth, Github, GithubException, GithubIntegration, UnknownObjectException
from github.GitTree import GitTree
from github.InputGitTreeElement import InputGitTreeElement
from github.PullRequest import PullRequest
from github.Repository import Repository
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.forge import PollMissed, approval_of, failed_fix_of, watch_change
from remedy import names, patching
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, secret
from remedy.models import (
    ChangeState,
    Edit,
    FixCommentRequest,
    FixCommentResult,
    IncidentStatus,
    IssueResult,
    OpenIssueRequest,
    Proposal,
    ProposeRequest,
    WatchChangeRequest,
)
from remedy.render.pull_request import (
    INCIDENT_TRAILER,
    commit_message,
    fix_failed_comment,
    fix_failed_marker,
    issue_body,
    issue_marker,
    issue_title,
    pull_request_body,
    pull_request_title,
)

_DEFAULT_RATE_LIMIT_WAIT_S = 60


class GitHubSetupError(Exception):
    """GitHub is not configured for this service (no repository or no credentials)."""


# ---------------------------------------------------------------------------- failures


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    text = str(data.get("message") or exc.message or "")
    details = [
        str(e.get("message") or e.get("code"))
        for e in data.get("errors") or []
        if isinstance(e, dict) and (e.get("message") or e.get("code"))
    ]
    return "; ".join([text, *details]) if details else text


def _retry_delay(headers: Mapping[str, str]) -> int:
    if "retry-after" in headers:
        try:
            return max(1, int(headers["retry-after"]))
        except ValueError:
            pass
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        try:
            return max(1, int(headers["x-ratelimit-reset"]) - int(time.time()))
        except ValueError:
            pass
    return _DEFAULT_RATE_LIMIT_WAIT_S


def github_failure(exc: GithubException, doing: str, config: RemedyConfig) -> ApplicationError:
    """Classify a GitHub error for Temporal's retry, naming what was being done and the fix."""
    status = exc.status
    message = _message(exc)
    headers = {key.lower(): value for key, value in (exc.headers or {}).items()}
    rate_limited = status == 429 or (
        status == 403
        and (
            "retry-after" in headers
            or headers.get("x-ratelimit-remaining") == "0"
            or "rate limit" in message.lower()
        )
    )
    if rate_limited:
        delay = _retry_delay(headers)
        return ApplicationError(
            f"GitHub {doing}: rate limited ({message}); retrying in {delay}s as GitHub asks",
            type="GitHubRateLimited",
            next_retry_delay=timedelta(seconds=delay),
        )
    if status >= 500:
        return ApplicationError(f"GitHub {doing}: {status} {message}", type="GitHubUnavailable")
    fixes = {
        401: f"the credentials are not accepted (renew ${config.github.token_env}, or the App's "
        f"key in ${config.github.app_private_key_env})",
        403: "the token may not do this (it needs contents, pull requests and issues: write)",
        404: "no such repository, or the token cannot see it (check services.<name>.github_repo)",
    }
    fix = fixes.get(status, "GitHub refused the request")
    return ApplicationError(
        f"GitHub {doing}: {status} {message}: {fix}", type="GitHubRefused", non_retryable=True
    )


# ---------------------------------------------------------------------------- the change


class _TreeReader:
    """Files of one commit, read through the Git Data API one directory at a time, as
    `remedy.patching` reads them."""

    def __init__(self, repo: Repository, root: GitTree) -> None:
        self._repo = repo
        self._trees: dict[str, GitTree | None] = {"": root}

    def mode(self, path: str) -> str | None:
        entry = self._entry(path)
        return entry[0] if entry else None

    def read(self, path: str) -> bytes:
        entry = self._entry(path)
        assert entry is not None, f"{path} was read without checking that it exists"
        blob = self._repo.get_git_blob(entry[1])
        if blob.encoding == "base64":
            return base64.b64decode(blob.content)
        return blob.content.encode("utf-8")

    def _entry(self, path: str) -> tuple[str, str] | None:
        """(mode, sha) of `path`, or None if it does not exist."""
        folder, _, leaf = path.rpartition("/")
        tree = self._tree(folder)
        if tree is None:
            return None
        for element in tree.tree:
            if element.path == leaf:
                return element.mode, element.sha
        return None

    def _tree(self, folder: str) -> GitTree | None:
        if folder in self._trees:
            return self._trees[folder]
        parent, _, name = folder.rpartition("/")
        above = self._tree(parent)
        if above is None:
            return None
        sha = next((e.sha for e in above.tree if e.path == name and e.type == "tree"), None)
        self._trees[folder] = self._repo.get_git_tree(sha) if sha else None
        return self._trees[folder]


def _conflict(message: str) -> ApplicationError:
    return ApplicationError(message, type="PatchConflict", non_retryable=True)


# ---------------------------------------------------------------------------- the forge


class GitHubActivities:
    """The `github` forge: opens the approved change as a pull request (`publish`), and keeps
    one issue per fingerprint for the severities configured to get one."""

    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self._config = config
        self._store = store
        self._installations: dict[str, int] = {}

    # -- activities ------------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_OPEN_PULL_REQUEST)
    def open_pull_request(self, request: ProposeRequest) -> Proposal:
        return self.publish(request.incident)

    @activity.defn(name=names.ACTIVITY_OPEN_ISSUE)
    def open_issue(self, request: OpenIssueRequest) -> IssueResult:
        """One issue per (service, fingerprint) for severities in [github] issue_severities."""
        incident = request.incident
        if incident.severity not in self._config.github.issue_severities:
            return IssueResult(
                opened=False,
                reason=f"severity {incident.severity.value} is not in [github] issue_severities",
            )
        try:
            repo_name = self._repo_name(incident.service)
            client = self._client(repo_name)
        except GitHubSetupError as exc:
            return IssueResult(opened=False, reason=str(exc))
        marker = issue_marker(incident)
        labels = list(self._config.github.issue_labels)
        doing = f"looking for the issue of {incident.service}/{incident.fingerprint}"
        try:
            repo = client.get_repo(repo_name)
            for issue in repo.get_issues(state="all", labels=labels):
                if issue.pull_request is None and marker in (issue.body or ""):
                    return IssueResult(opened=True, number=issue.number, url=issue.html_url)
            doing = f"opening an issue in {repo_name}"
            created = repo.create_issue(
                title=issue_title(incident),
                body=issue_body(incident, request.raw_error),
                labels=labels,
            )
        except GithubException as exc:
            raise github_failure(exc, doing, self._config) from None
        activity.logger.info("opened issue #%s for %s", created.number, incident.incident_id)
        return IssueResult(opened=True, created=True, number=created.number, url=created.html_url)

    @activity.defn(name=names.ACTIVITY_WATCH_PULL_REQUEST)
    async def watch_pull_request(self, request: WatchChangeRequest) -> ChangeState:
        """Look at the change's pull request every `poll_s` for `watch_s`: merged (with GitHub's
        merge_commit_sha, the commit that landed after a merge, squash or rebase), closed
        unmerged, or open at the end.

        A pull request this watch never found raises PullRequestNotFound (non-retryable): it
        was never opened in the configured repository (a local push, or github_repo changed
        since), and no amount of polling finds it. Once found, a look that misses it is a stale
        read (GitHub never deletes a pull request), so the watch goes on. Rate limits, 5xx and
        connection errors wait for the next look (at least as long as GitHub asks); refusals
        (401, 403, 404) and missing credentials raise, non-retryable."""
        branch = request.proposal.branch
        repo_name, client = self._configured(request.service)
        repo: Repository | None = None
        seen = False

        def look() -> ChangeState | None:
            nonlocal repo, seen
            doing = f"looking at the pull request from {branch}"
            try:
                if repo is None:
                    repo = client.get_repo(repo_name)
                pull = self._find_pull(repo, branch)
            except GithubException as exc:
                failure = github_failure(exc, doing, self._config)
                if failure.non_retryable:
                    raise failure from None
                delay = failure.next_retry_delay
                raise PollMissed(str(failure), delay.total_seconds() if delay else 0.0) from None
            except OSError as exc:  # requests' connection errors and timeouts are OSErrors
                raise PollMissed(f"GitHub {doing}: {exc}") from None
            if pull is None:
                if seen:
                    raise PollMissed(f"the pull request from {branch} was not listed this time")
                raise ApplicationError(
                    f"no pull request from {branch} in {repo_name}, so there is none to watch "
                    f"(was it opened elsewhere? services.{request.service}.github_repo names "
                    f"the repository Remedy looks in)",
                    type="PullRequestNotFound",
                    non_retryable=True,
                )
            seen = True
            # merged_at is in the listing; `merged` is not, and reading it costs a request.
            if pull.merged_at is not None:
                return ChangeState(state="merged", merge_commit=pull.merge_commit_sha)
            if pull.state == "closed":
                return ChangeState(state="closed")
            return None

        return await watch_change(request, look)

    @activity.defn(name=names.ACTIVITY_COMMENT_ON_PULL_REQUEST)
    def comment_on_pull_request(self, request: FixCommentRequest) -> FixCommentResult:
        """Tell the pull request's reviewers that its fix did not hold, once per failed
        release: a comment with the same hidden marker is looked for before one is posted."""
        incident = request.incident
        proposal = failed_fix_of(incident)
        repo_name, client = self._configured(incident.service)
        marker = fix_failed_marker(incident)
        doing = f"reading {repo_name}"
        try:
            repo = client.get_repo(repo_name)
            doing = f"looking for the pull request from {proposal.branch}"
            pull = self._find_pull(repo, proposal.branch)
            if pull is None:
                raise ApplicationError(
                    f"no pull request from {proposal.branch} in {repo_name} to comment on "
                    f"(services.{incident.service}.github_repo names the repository Remedy "
                    f"looks in)",
                    type="PullRequestNotFound",
                    non_retryable=True,
                )
            doing = f"reading the comments of pull request #{pull.number}"
            for comment in pull.get_issue_comments():
                if marker in (comment.body or ""):
                    return FixCommentResult(created=False, url=comment.html_url)
            doing = f"commenting on pull request #{pull.number}"
            created = pull.create_issue_comment(fix_failed_comment(incident))
        except GithubException as exc:
            raise github_failure(exc, doing, self._config) from None
        activity.logger.info("commented %s for %s", created.html_url, incident.incident_id)
        return FixCommentResult(created=True, url=created.html_url)

    # -- the forge ---------------------------------------------------------------

    def publish(self, incident: IncidentStatus) -> Proposal:
        """Open (or find) the incident's pull request; a retry returns the same one."""
        diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
        if diagnosis is None or not diagnosis.edits:
            raise ApplicationError(
                f"incident {incident.incident_id} has no edits to propose "
                f"(open_pull_request runs only after an approved, verified patch)",
                type="NothingToPropose",
                non_retryable=True,
            )
        approval_of(incident)
        repo_name, client = self._configured(incident.service)
        base = self._config.service(incident.service).branch
        branch = names.branch_for(incident.incident_id)
        title = pull_request_title(incident)
        diff = ""
        if incident.patch is not None and incident.patch.diff is not None:
            diff = self._store.get_text(incident.patch.diff)
        body = pull_request_body(incident, diff)
        body_ref = self._store.put_text(f"{incident.incident_id}/pull_request.md", body)

        doing = f"reading {repo_name}"
        try:
            repo = client.get_repo(repo_name)
            doing = f"looking for the pull request from {branch}"
            pull = self._find_pull(repo, branch)
            if pull is None:
                doing = f"looking for branch {branch}"
                if self._branch_tip(repo, branch, incident.incident_id) is None:
                    doing = f"committing the change onto {base}"
                    commit = self._commit(repo, base, diagnosis.edits, incident, title)
                    doing = f"creating branch {branch}"
                    self._create_branch(repo, branch, commit, incident.incident_id)
                doing = f"opening the pull request from {branch} into {base}"
                pull = self._create_pull(repo, base, branch, title, body)
            doing = f"labelling pull request #{pull.number}"
            self._ensure_labels(pull)
        except GithubException as exc:
            raise github_failure(exc, doing, self._config) from None
        activity.logger.info("pull request %s for %s", pull.html_url, incident.incident_id)
        return Proposal(
            branch=branch,
            commit=pull.head.sha,
            title=pull.title,
            remote=repo.html_url,
            pr_url=pull.html_url,
            body=body_ref,
        )

    # -- steps -----------------------------------------------------------------

    def _find_pull(self, repo: Repository, branch: str) -> PullRequest | None:
        for pull in repo.get_pulls(state="all", head=f"{repo.owner.login}:{branch}"):
            return pull
        return None

    def _branch_tip(self, repo: Repository, branch: str, incident_id: str) -> str | None:
        """The branch's commit if an earlier attempt made it; None if there is no branch."""
        try:
            tip: str = repo.get_git_ref(f"heads/{branch}").object.sha
        except UnknownObjectException:
            return None
        if f"{INCIDENT_TRAILER}: {incident_id}" not in repo.get_git_commit(tip).message:
            raise ApplicationError(
                f"branch {branch} already exists in {repo.full_name} at {tip[:12]} without the "
                f"trailer '{INCIDENT_TRAILER}: {incident_id}', so a person owns it; Remedy never "
                f"overwrites it (delete or rename that branch, then retry)",
                type="BranchConflict",
                non_retryable=True,
            )
        return tip

    def _commit(
        self,
        repo: Repository,
        base: str,
        edits: Sequence[Edit],
        incident: IncidentStatus,
        title: str,
    ) -> str:
        head = repo.get_git_ref(f"heads/{base}").object.sha
        parent = repo.get_git_commit(head)
        root = repo.get_git_tree(parent.tree.sha)
        try:
            changed = patching.apply_edits(
                edits, _TreeReader(repo, root), f"the head of {base} ({head[:12]})"
            )
        except patching.EditRefused as refusal:
            # prepare_patch applied these edits at the incident's commit; only a move of the
            # base since then can refuse them here.
            raise _conflict(
                f"{refusal}; {base} changed since the incident's commit (resolve it by hand, or "
                f"let the error recur to diagnose it again)"
            ) from None
        elements = [
            InputGitTreeElement(
                path=path,
                mode=edited.mode,
                type="blob",
                sha=repo.create_git_blob(edited.text, "utf-8").sha,
            )
            for path, edited in sorted(changed.items())
        ]
        tree = repo.create_git_tree(elements, root)
        commit = repo.create_git_commit(commit_message(incident, title), tree, [parent])
        return commit.sha

    def _create_branch(self, repo: Repository, branch: str, commit: str, incident_id: str) -> None:
        try:
            repo.create_git_ref(f"refs/heads/{branch}", commit)
        except GithubException as exc:
            # Another attempt created it between our lookup and now: use theirs.
            exists = exc.status == 422 and "already exists" in _message(exc).lower()
            if exists and self._branch_tip(repo, branch, incident_id) is not None:
                return
            raise

    def _create_pull(
        self, repo: Repository, base: str, branch: str, title: str, body: str
    ) -> PullRequest:
        draft = self._config.github.draft
        try:
            return repo.create_pull(
                base=base, head=branch, title=title, body=body, draft=draft,
                maintainer_can_modify=True,
            )  # fmt: skip
        except GithubException as exc:
            message = _message(exc).lower()
            if exc.status != 422:
                raise
            if "already exists" in message:
                found = self._find_pull(repo, branch)
                if found is not None:
                    return found
            if draft and "draft" in message:
                # Draft pull requests need a paid plan for private repositories.
                activity.logger.warning("%s: %s; opening a ready pull request", repo.full_name,
                                        _message(exc))  # fmt: skip
                return repo.create_pull(base=base, head=branch, title=title, body=body,
                                        maintainer_can_modify=True)  # fmt: skip
            raise

    def _ensure_labels(self, pull: PullRequest) -> None:
        present = {label.name for label in pull.labels}
        missing = [name for name in self._config.github.labels if name not in present]
        if missing:
            pull.add_to_labels(*missing)

    # -- configuration ---------------------------------------------------------

    def _configured(self, service: str) -> tuple[str, Github]:
        """The service's repository and a client for it; GitHubNotConfigured (non-retryable)
        when either is missing."""
        try:
            repo_name = self._repo_name(service)
            return repo_name, self._client(repo_name)
        except GitHubSetupError as exc:
            raise ApplicationError(
                str(exc), type="GitHubNotConfigured", non_retryable=True
            ) from None

    def _repo_name(self, service: str) -> str:
        repo_name = self._config.service(service).github_repo
        if not repo_name:
            raise GitHubSetupError(f"remedy.toml: services.{service}.github_repo is not set")
        return repo_name

    def _client(self, repo_name: str) -> Github:
        """A client with a token, or with a GitHub App's installation token for `repo_name`."""
        github = self._config.github
        options: dict[str, Any] = {
            "base_url": github.api_url.rstrip("/"),
            "timeout": github.timeout_s,
            "user_agent": "remedy",
            "retry": None,
            "seconds_between_requests": None,
            "seconds_between_writes": github.write_interval_s or None,
        }
        token = secret(github.token_env)
        if token:
            return Github(auth=Auth.Token(token), **options)
        private_key = secret(github.app_private_key_env)
        if github.app_id and private_key:
            app = Auth.AppAuth(github.app_id, private_key)
            installation = github.app_installation_id or self._installation(app, repo_name)
            return Github(auth=app.get_installation_auth(installation), **options)
        raise GitHubSetupError(
            f"GitHub is not configured: set ${github.token_env}, or [github] app_id and "
            f"${github.app_private_key_env} (a GitHub App)"
        )

    def _installation(self, app: Auth.AppAuth, repo_name: str) -> int:
        if repo_name not in self._installations:
            github = self._config.github
            integration = GithubIntegration(
                auth=app, base_url=github.api_url.rstrip("/"), timeout=github.timeout_s, retry=None
            )
            owner, _, name = repo_name.partition("/")
            try:
                installation = integration.get_repo_installation(owner, name)
            except GithubException as exc:
                raise github_failure(exc, f"finding the App's installation on {repo_name}",
                                     self._config) from None  # fmt: skip
            self._installations[repo_name] = installation.id
        return self._installations[repo_name]
