"""Who may approve from the CLI: a per-approver credential, checked before the Update is sent.

`remedy approve ID --as alice` reads alice's credential from REMEDY_APPROVER_TOKEN and checks
it against `[services.<name>.cli_approvers] alice = "$scrypt$..."` in remedy.toml (the line
`remedy approver-hash alice` prints). The credential never leaves this process: the `decide`
Update, and so the workflow's history, carry only the approver's name. What Temporal access
alone allows, past this check: docs/approvals.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets

from remedy.config import RemedyConfig, secret

APPROVER_TOKEN_ENV = "REMEDY_APPROVER_TOKEN"

# scrypt at n=2**14, r=8 (16 MiB, tens of milliseconds): slow for a guesser, quick for a person.
_LOG2_N, _R, _P = 14, 8, 1
_KEY_BYTES = 32
_HASH = re.compile(
    r"^\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<key>[A-Za-z0-9+/]+)$"
)


class ApprovalRefused(Exception):
    """The CLI will not send this decision; the message says what to do, not who may."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(token: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        token.encode(), salt=salt, n=2**log2_n, r=r, p=p, maxmem=2**26, dklen=_KEY_BYTES
    )


def hash_credential(token: str) -> str:
    """The stored form of a credential: salted scrypt, in the PHC string format."""
    salt = secrets.token_bytes(16)
    key = _scrypt(token, salt, _LOG2_N, _R, _P)
    return f"$scrypt$ln={_LOG2_N},r={_R},p={_P}${_b64(salt)}${_b64(key)}"


def credential_matches(token: str, stored: str) -> bool:
    """Whether `token` is the credential `stored` was made from; ValueError: not a hash."""
    found = _HASH.match(stored)
    if found is None or not 10 <= int(found["ln"]) <= 20:
        raise ValueError("not a credential hash")
    try:
        salt, key = _unb64(found["salt"]), _unb64(found["key"])
    except binascii.Error:
        raise ValueError("not a credential hash") from None
    computed = _scrypt(token, salt, int(found["ln"]), int(found["r"]), int(found["p"]))
    return hmac.compare_digest(computed, key)


@functools.cache
def _stand_in() -> str:
    """Checked when the approver has no entry, so that a refusal costs the same either way."""
    return hash_credential(secrets.token_urlsafe(16))


def check_cli_approver(
    config: RemedyConfig, service: str, approver: str, token: str | None = None
) -> None:
    """Refuse (ApprovalRefused) unless `approver` proves who they are for `service` with
    `token` (default: REMEDY_APPROVER_TOKEN).

    The workflow's validator still decides whether they may approve this incident; this only
    stops a CLI user from deciding under someone else's name.
    """
    settings = config.service(service)
    if not settings.cli_approval:
        raise ApprovalRefused(
            f"service {service!r} takes no approvals from the CLI (cli_approval = false): "
            "decide in Slack"
        )
    token = token or secret(APPROVER_TOKEN_ENV)
    if not token:
        raise ApprovalRefused(
            f"set {APPROVER_TOKEN_ENV} to your approver credential; its hash goes under "
            f"[services.{service}.cli_approvers] (`remedy approver-hash APPROVER`)"
        )
    stored = settings.cli_approvers.get(approver)
    try:
        matches = credential_matches(token, stored or _stand_in()) and stored is not None
    except ValueError:
        raise ApprovalRefused(
            f"{config.source or 'remedy.toml'}: services.{service}.cli_approvers.{approver}: "
            f"not a credential hash (print one with `remedy approver-hash {approver}`)"
        ) from None
    if not matches:
        raise ApprovalRefused(
            f"the credential in {APPROVER_TOKEN_ENV} is not {approver!r}'s for service "
            f"{service!r} (its hash belongs under [services.{service}.cli_approvers])"
        )
