"""`remedy watch`: tail services' log files and report their errors to the intake.

remedy.watch.tail follows each file from its durable position, remedy.watch.formats makes
events of its error records; this module sends them, one at a time and in file order, and
lets the position move past a record only once the intake has answered 202 for it. A
record sent in the instant before a crash is sent again on restart (at-least-once); the
intake counts it as one more occurrence of the same incident.

Delivery retries connection errors, 429 and 5xx with jittered exponential back-off
(tenacity), never sooner than the intake's Retry-After; any other 4xx is skipped, since
sending it again cannot succeed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)

from remedy.config import RemedyConfig, secret
from remedy.models import ErrorEvent
from remedy.retry_after import retry_after_s
from remedy.watch.formats import Found, event_from_json, event_from_traceback
from remedy.watch.tail import TailedFile, WatchError, WatchState
from starter.client import intake_url

log = logging.getLogger(__name__)

ONCE_ATTEMPTS = 4


@dataclass
class Totals:
    reported: int = 0
    skipped: int = 0  # error records the intake refused with a 4xx (or that cannot be events)


class IntakeDown(Exception):
    """The intake did not accept a record after the retries `--once` allows."""


class _Unavailable(Exception):
    """One attempt that may succeed later: no connection, 429 or 5xx."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after_s = retry_after


class Watcher:
    def __init__(
        self,
        config: RemedyConfig,
        *,
        once: bool = False,
        http: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.settings = config.watch
        self.once = once
        self.url = intake_url(config) + "/v1/errors"
        self.totals = Totals()
        self._stop = threading.Event()
        log_files = self._log_files(config)
        self._tokens = self._check_tokens(config, [service for _, service in log_files])
        self.state = WatchState(config.home_dir / self.settings.state_file)
        self.tails = [
            TailedFile(str(path), path, service, self.state, self.settings)
            for path, service in log_files
        ]
        self._http = http or httpx.Client(timeout=self.settings.request_timeout_s)
        # Equal jitter: half the exponential step, plus up to half again at random.
        half_step = self.settings.max_backoff_s / 2
        self._backoff = wait_exponential(multiplier=0.25, max=half_step) + wait_random_exponential(
            multiplier=0.25, max=half_step
        )

    @staticmethod
    def _log_files(config: RemedyConfig) -> list[tuple[Path, str]]:
        """(path, service) of every configured log file; each reports as one service."""
        log_files: list[tuple[Path, str]] = []
        seen: dict[Path, str] = {}
        for name, service in config.services.items():
            for raw in service.log_paths:
                path = config.resolve(raw)
                if path in seen:
                    raise WatchError(
                        f"remedy.toml: services.{name}.log_paths: {path} is also a log of "
                        f"service {seen[path]!r} (each file reports as one service)"
                    )
                seen[path] = name
                log_files.append((path, name))
        if not log_files:
            raise WatchError(
                "remedy.toml: no service has log_paths, so there is nothing to watch "
                '(add log_paths = ["/var/log/shop/app.json"] under [services.<name>])'
            )
        return log_files

    @staticmethod
    def _check_tokens(config: RemedyConfig, services: list[str]) -> dict[str, str]:
        env_names: dict[str, str] = {}
        for service in services:
            env_name = config.services[service].intake_token_env
            if not env_name:
                raise WatchError(
                    f"remedy.toml: services.{service}.intake_token_env is not set; the "
                    "watcher reports with the service's intake token (name its variable)"
                )
            if not secret(env_name):
                raise WatchError(
                    f"the environment variable {env_name} (services.{service}."
                    "intake_token_env) is empty; export the service's intake token"
                )
            env_names[service] = env_name
        return env_names

    # -- running --------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Watch until stopped (or, with once, until everything present is read).

        Returns 0, or 1 when `once` could not deliver a record (it is read again next time).
        """
        try:
            while not self._stop.is_set():
                progressed = self.poll()
                if self.once and not progressed:
                    return 0
                if not progressed:
                    self._stop.wait(self.settings.poll_interval_s)
        except IntakeDown as exc:
            log.error("%s", exc)
            return 1
        finally:
            self.close()
        return 0

    def close(self) -> None:
        for tail in self.tails:
            tail.close()
        self._http.close()

    def poll(self) -> bool:
        """Read what is new in every file once; True if anything moved."""
        progressed = False
        for tail in self.tails:
            if self._stop.is_set():
                break
            progressed |= tail.poll(partial(self._deliver, tail), once=self.once)
        return progressed

    # -- reporting ---------------------------------------------------------------------

    def _deliver(self, tail: TailedFile, record: Found) -> bool:
        if self._stop.is_set():
            return False
        event = self._event(tail, record)
        if event is not None:
            self._report(tail, record, event.model_dump(mode="json", exclude_none=True))
        return True

    def _event(self, tail: TailedFile, record: Found) -> ErrorEvent | None:
        if isinstance(record.payload, dict):
            event = event_from_json(record.payload)
            if event is None:
                return None
        else:
            event = event_from_traceback(record.payload, record.context)
        event["service"] = tail.service
        event["tags"] = {"source": "remedy-watch", "log.path": tail.key, **event["tags"]}
        try:
            return ErrorEvent.model_validate(event)
        except ValidationError as exc:
            self.totals.skipped += 1
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            log.warning(
                "%s: bytes %d-%d: an error record that cannot be reported (%s); skipped",
                tail.key,
                record.start,
                record.end,
                problem,
            )
            return None

    def _report(self, tail: TailedFile, record: Found, body: dict[str, Any]) -> None:
        """Send until the intake takes or refuses the record; IntakeDown when giving up."""

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            retry_after = failure.retry_after_s if isinstance(failure, _Unavailable) else None
            return max(retry_after or 0.0, self._backoff(state))

        def sleep(seconds: float) -> None:
            if self._stop.wait(seconds):
                raise IntakeDown(f"{tail.key}: stopped while the intake was unavailable")

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s: %s; retrying in %.1fs", tail.key, failure, delay)

        retrying = Retrying(
            retry=retry_if_exception_type(_Unavailable),
            stop=stop_after_attempt(ONCE_ATTEMPTS) if self.once else stop_never,
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
        )
        try:
            response = retrying(self._post, tail.service, body)
        except RetryError as exc:
            raise IntakeDown(
                f"{tail.key}: {exc.last_attempt.exception()} after "
                f"{exc.last_attempt.attempt_number} attempts; the record at byte "
                f"{record.start} will be sent by the next run (start the intake: remedy serve)"
            ) from None
        if response.status_code in (200, 201, 202):
            self.totals.reported += 1
            return
        self.totals.skipped += 1
        log.warning(
            "%s: bytes %d-%d: the intake refused the record with HTTP %d (%s); "
            "skipped, since sending it again cannot succeed",
            tail.key,
            record.start,
            record.end,
            response.status_code,
            response.text[:300],
        )

    def _post(self, service: str, body: dict[str, Any]) -> httpx.Response:
        """One attempt: the intake's answer, or _Unavailable when trying again may help."""
        headers = {"Authorization": f"Bearer {secret(self._tokens[service])}"}
        try:
            response = self._http.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _Unavailable(f"intake unreachable at {self.url}: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Unavailable(
                f"the intake answered HTTP {response.status_code}",
                retry_after_s(response.headers.get("retry-after")),
            )
        return response
