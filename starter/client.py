"""A small synchronous client of Remedy's own intake, for the CLI, the demo and tools."""

from __future__ import annotations

from typing import Any

import httpx

from remedy.config import ConfigError, RemedyConfig, secret


class IntakeRejected(Exception):
    """The intake answered with an error, or could not be reached."""


def intake_url(config: RemedyConfig) -> str:
    if config.intake.public_url:
        return config.intake.public_url.rstrip("/")
    return f"http://{config.intake.host}:{config.intake.port}"


class IntakeClient:
    def __init__(self, config: RemedyConfig, url: str, timeout_s: float = 10.0) -> None:
        self._config = config
        self.url = url.rstrip("/")
        self._timeout = timeout_s

    @classmethod
    def from_config(cls, config: RemedyConfig, url: str | None = None) -> IntakeClient:
        return cls(config, url or intake_url(config))

    def _token(self, service: str) -> str:
        try:
            env_name = self._config.service(service).intake_token_env
        except ConfigError as exc:
            raise IntakeRejected(str(exc)) from None
        token = secret(env_name)
        if not token:
            raise IntakeRejected(
                f"no intake token for service {service!r}: set the environment variable "
                f"{env_name or '(services.' + service + '.intake_token_env is not set)'}"
            )
        return token

    def report(self, event: dict[str, Any]) -> dict[str, Any]:
        service = event.get("service")
        if not isinstance(service, str):
            raise IntakeRejected("the event has no 'service' string")
        try:
            response = httpx.post(
                f"{self.url}/v1/errors",
                json=event,
                headers={"Authorization": f"Bearer {self._token(service)}"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise IntakeRejected(f"intake at {self.url} unreachable: {exc}") from None
        if response.status_code != 202:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise IntakeRejected(f"intake answered {response.status_code}: {detail}")
        body: dict[str, Any] = response.json()
        return body
