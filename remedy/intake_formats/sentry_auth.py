"""Sentry's authentication, mapped to Remedy's services: which key a request presents, which
service it belongs to, and the DSN a service's SDK is given (`remedy dsn SERVICE`).

A service's keys are the value of `sentry_public_key_env` when it names one, its intake token,
and a key derived from the token (`token_dsn_key`). `remedy dsn` prints the public key or the
derived one, never the token: a DSN travels in URLs (`?sentry_key=`), headers and config
files, and a derived key can only send reports, not read incidents. It is hex, as Sentry's
keys are, because @sentry/node refuses a DSN whose key has anything but letters, digits and
`_`. The project id of the DSN is `sentry_project_id`, or a number derived from the name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlsplit

from remedy.config import ConfigError, RemedyConfig, secret
from remedy.intake_formats.report import Rejected

# What every SDK's DSN parser takes as a key (JavaScript's is the strictest: `\w+`).
_DSN_KEY = re.compile(r"^[A-Za-z0-9_]+$")


def project_id_for(config: RemedyConfig, name: str) -> int:
    """The project id in the service's DSN: configured, or stable for its name."""
    configured = config.service(name).sentry_project_id
    if configured is not None:
        return configured
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 9_000_000 + 1_000_000


def token_dsn_key(token: str) -> str:
    """The DSN key of a service whose key is its intake token: 32 hex digits from it."""
    return hmac.new(token.encode(), b"remedy sentry dsn key", hashlib.sha256).hexdigest()[:32]


def _key_env(config: RemedyConfig, name: str) -> str | None:
    service = config.service(name)
    return service.sentry_public_key_env or service.intake_token_env


def _dsn_keys(config: RemedyConfig, name: str) -> tuple[str | None, str | None]:
    """The public key and the token's own DSN key, each None when its variable is unset."""
    service = config.service(name)
    public, token = secret(service.sentry_public_key_env), secret(service.intake_token_env)
    return public, token and token_dsn_key(token)


def _keys(config: RemedyConfig, name: str) -> list[str]:
    token = secret(config.service(name).intake_token_env)
    return [key for key in (*_dsn_keys(config, name), token) if key]


def dsn_for(config: RemedyConfig, name: str) -> str:
    """`<scheme>://<key>@<intake host:port and path>/<project id>` for the service's SDK."""
    public, derived = _dsn_keys(config, name)
    key = public or derived
    if not key:
        env = _key_env(config, name)
        where = f"set {env}" if env else f"set services.{name}.intake_token_env and export it"
        raise ConfigError(f"service {name!r} has no Sentry key: {where}")
    if not _DSN_KEY.match(key):
        raise ConfigError(
            f"service {name!r}: the key in {_key_env(config, name)} has characters a DSN cannot "
            "carry; make it of letters, digits and _ only"
        )
    intake = config.intake
    if intake.public_url:
        base = urlsplit(intake.public_url)
        scheme, netloc, path = base.scheme, base.netloc.rpartition("@")[2], base.path
    else:
        host = "127.0.0.1" if intake.host in ("", "0.0.0.0", "::") else intake.host
        scheme, netloc, path = "http", f"[{host}]" if ":" in host else host, ""
        netloc = f"{netloc}:{intake.port}"
    return f"{scheme}://{key}@{netloc}{path.rstrip('/')}/{project_id_for(config, name)}"


def auth_header_key(header: str | None) -> str | None:
    """`sentry_key` of an `X-Sentry-Auth` (or `Authorization: Sentry ...`) header."""
    if not header:
        return None
    text = header.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "sentry_key":
            return value.strip() or None
    return None


def dsn_key(dsn: Any) -> str | None:
    """The key of a DSN, as an envelope's `dsn` header carries it."""
    if not isinstance(dsn, str):
        return None
    try:
        return urlsplit(dsn).username or None
    except ValueError:
        return None


def service_for_key(config: RemedyConfig, key: str, project_id: str) -> str:
    """The service `key` belongs to, for the project id of the request's path.

    401 when the key is nobody's (saying so when that project's service has no key at the
    intake); 403 when it is a service's key but not of that project, one answer whether the
    project exists or not. Every service's keys are compared, so timing tells nothing.
    """
    presented = key.encode()
    owners = [
        name
        for name in config.services
        if any([hmac.compare_digest(presented, k.encode()) for k in _keys(config, name)])
    ]
    for name in owners:
        if str(project_id_for(config, name)) == project_id:
            return name
    if owners:
        raise Rejected(403, f"this key may not report for project {project_id!r}")
    claimed = next(
        (n for n in config.services if str(project_id_for(config, n)) == project_id), None
    )
    if claimed is not None and not _keys(config, claimed):
        env = _key_env(config, claimed)
        where = f"set {env}" if env else f"set services.{claimed}.intake_token_env"
        raise Rejected(401, f"the intake has no key for service {claimed!r}: {where} where it runs")
    raise Rejected(401, "invalid sentry_key")
