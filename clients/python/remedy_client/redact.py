"""Removing obvious secrets from text before it leaves the process.

`redact_tokens` removes what is a secret by its shape (credentials in URLs, bearer
headers, well-known token formats, private keys). `redact` also removes the value of any
`key=value` / `key: value` / `"key": "value"` whose key names a secret; it is for messages,
log text and tags. Source lines get `redact_code`, which only adds quoted literals assigned
to such keys: an unquoted `password = form["password"]` is code, not a secret.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_SECRET_KEY = (
    r"[\w.-]*(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|authorization|credentials?|cookie|session[_-]?(?:id|key)|signature)[\w.-]*"
)

_TOKEN_PATTERNS = [
    # user:password@ in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(@)"), r"\1" + REDACTED + r"\2"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        REDACTED,
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), REDACTED),  # GitHub tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}\b"), REDACTED),
    (re.compile(r"\bxox[abprse]-[A-Za-z0-9-]{10,}"), REDACTED),  # Slack
    (re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"), REDACTED),  # Anthropic, OpenAI
    (re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"), REDACTED),  # Stripe
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), REDACTED),  # Google API key
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), REDACTED),
]

_QUOTED_PAIR = re.compile(
    r"(?i)\b(" + _SECRET_KEY + r"""["']?\s*[:=]\s*)(["'])(?!\[REDACTED\])(?:(?!\2).)+\2"""
)
_BARE_PAIR = re.compile(
    r"(?i)\b(" + _SECRET_KEY + r"""\s*[:=]\s*)(?!\[REDACTED\]|(?:bearer|basic)\s)[^\s"'&,;)}\]]+"""
)


_SECRET_KEY_NAME = re.compile(_SECRET_KEY, re.IGNORECASE)


def is_secret_key(name: str) -> bool:
    """Whether a tag or field called `name` holds a secret by its name alone."""
    return _SECRET_KEY_NAME.fullmatch(name) is not None


def redact_tokens(text: str) -> str:
    """Remove secrets recognisable by their shape alone."""
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_code(line: str) -> str:
    """A source line: shaped secrets, and string literals assigned to secret-named keys
    (`password = "hunter2"`); `password = form["password"]` is left as the code it is."""
    line = redact_tokens(line)
    return _QUOTED_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", line)


def redact(text: str) -> str:
    """Remove shaped secrets and the values of secret-named keys."""
    text = redact_code(text)
    return _BARE_PAIR.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
