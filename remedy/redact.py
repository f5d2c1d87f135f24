"""Remove credentials from error events before they are stored, prompted or posted.

Every secret becomes the fixed text `[REDACTED]`, so redaction is deterministic and
idempotent and fingerprints computed after it stay stable. Patterns are anchored and use
possessive quantifiers: time is linear in the input, whatever the input.

Source lines of a Python traceback (and `Frame.code`) are code, not data: there an unquoted
`password=pw` or `token: str` names a variable or a type, so only quoted literals and
token-shaped secrets are redacted in them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from remedy.models import ErrorEvent, ErrorInfo, Frame

REDACTED = "[REDACTED]"

_PEM = re.compile(
    r"(?P<begin>-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
    r"(?:.*?(?P<end>-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)|.*)",
    re.DOTALL,
)

# Whole tokens whose shape alone says they are credentials.
_TOKENS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"eyJ[A-Za-z0-9_-]++\.eyJ[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+"  # JWT
    r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}+"  # GitHub classic tokens
    r"|github_pat_[A-Za-z0-9_]{22,}+"  # GitHub fine-grained tokens
    r"|(?:xox[abposre]|xapp)-[A-Za-z0-9-]{10,}+"  # Slack
    r"|sk-ant-[A-Za-z0-9_-]{20,}+"  # Anthropic
    r"|sk-[A-Za-z0-9_-]{20,}+"  # OpenAI and other sk- keys
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+"  # Stripe
    r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"  # Google API key
    r")"
)
_AWS_SECRET = re.compile(
    r"(?i)(?P<key>aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)"
    r"(?P<sep>[\"']?[ \t]*+[:=][ \t]*+[\"']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<prefix>(?<![\w-])(?:proxy-)?authorization[\"']?[ \t]*+[:=][ \t]*+[\"']?"
    r"(?:(?:bearer|basic|digest|token|bot|negotiate)[ \t]++)?)(?P<value>[^\s\"',;]++)"
)
_BEARER = re.compile(r"(?<![\w-])(?P<prefix>Bearer[ \t]++)[A-Za-z0-9._~+/-]{16,}+=*+")
_COOKIE = re.compile(
    r"(?i)(?P<prefix>(?<![\w-])(?:set-)?cookie[\"']?[ \t]*+[:=][ \t]*+)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*+\"|'(?:[^'\\\n]|\\.)*+'|[^\n]++)"
)
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*+://[^\s:/@]*+:)(?P<password>[^\s/@]++)@"
)
# A template's slot for a password ("{password}", "%s", "${DB_PASS}", "***") hides nothing.
_PLACEHOLDER = re.compile(
    r"\{[^{}]*\}|\$\{[^{}]*\}|\$\w+|%s|%\([^()]*\)s|\*+|<[^<>]*>|\[REDACTED\]"
)
# Go's MySQL driver: user:password@tcp(host:3306)/db. Matched from the start of the word so
# a failed match never rescans it.
_DSN_CREDENTIALS = re.compile(r"(?<![^\s/@])(?P<credentials>[^\s/@]++)@(?P<net>tcp|unix)\(")
_KEY_VALUE = re.compile(
    r"(?<![\w.-])(?P<quote>[\"']?)(?P<key>[A-Za-z_][\w.-]*+)(?P=quote)(?P<sep>[ \t]*+[:=][ \t]*+)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*+\"|'(?:[^'\\\n]|\\.)*+'|[^\s\"'`,;&<>)\]}]++)"
)

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "clientsecret",
        "credential",
        "credentials",
        "cookie",
        "session",
        "sessionid",
        "accesstoken",
        "refreshtoken",
        "authtoken",
        "csrftoken",
        "xsrftoken",
    }
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")}
)
_TAG_ONLY_WORDS = frozenset({"authorization", "auth"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SEPARATORS = re.compile(r"[-. ]")
_EXCEPTION_NAME = re.compile(r"[A-Z]\w*(?:Error|Exception|Warning)")
_PY_FILE_LINE = re.compile(r'^(?: *\| ?)?(?P<indent> *)File "[^\n]*", line \d+')
_INDENT = re.compile(r"^(?: *\| ?)?(?P<indent> *)")


def _key_words(key: str) -> list[str]:
    return _KEY_SEPARATORS.sub("_", _CAMEL.sub("_", key.strip("\"'"))).lower().split("_")


def _is_secret_key(key: str, extra: frozenset[str] = frozenset()) -> bool:
    words = _key_words(key)
    if any(word in _SECRET_WORDS or word in extra for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def is_sensitive_tag(key: str) -> bool:
    """Tags whose key names a credential (password, token, secret, authorization, cookie,
    api_key, session, ...) are redacted whole, whatever their value looks like."""
    return _is_secret_key(key, _TAG_ONLY_WORDS)


def _key_value(code: bool) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        key, value = match["key"], match["value"]
        last_name = key.rsplit(".", 1)[-1]
        if not _is_secret_key(key) or _EXCEPTION_NAME.fullmatch(last_name):
            return match[0]
        head = match[0][: match.start("value") - match.start()]
        if value[0] in "\"'":
            return match[0] if len(value) == 2 else f"{head}{value[0]}{REDACTED}{value[0]}"
        # Unquoted: in code a variable or a type; "==" / ":=" compare or bind; done already.
        if code or value.startswith(("=", REDACTED[:-1])):
            return match[0]
        return f"{head}{REDACTED}"

    return replace


def _cookie(code: bool) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        value = match["value"]
        if value[0] in "\"'":
            return f"{match['prefix']}{value[0]}{REDACTED}{value[0]}"
        return match[0] if code else f"{match['prefix']}{REDACTED}"

    return replace


def _url_credentials(match: re.Match[str]) -> str:
    if _PLACEHOLDER.fullmatch(match["password"]):
        return match[0]
    return f"{match['prefix']}{REDACTED}@"


def _dsn_credentials(match: re.Match[str]) -> str:
    user, colon, password = match["credentials"].partition(":")
    if not colon or not password or _PLACEHOLDER.fullmatch(password):
        return match[0]
    return f"{user}:{REDACTED}@{match['net']}("


def _pem(match: re.Match[str]) -> str:
    end = f"\n{match['end']}" if match["end"] else ""
    return f"{match['begin']}\n{REDACTED}{end}"


_KEY_VALUE_IN_TEXT = _key_value(code=False)
_KEY_VALUE_IN_CODE = _key_value(code=True)
_COOKIE_IN_TEXT = _cookie(code=False)
_COOKIE_IN_CODE = _cookie(code=True)


def _redact_line(line: str, code: bool) -> str:
    # Line-local: no pattern crosses a newline, so a run of lines is redacted in one pass.
    line = _AWS_SECRET.sub(rf"\g<key>\g<sep>{REDACTED}", line)
    if not code:  # in code the header's value is an expression: f"Bearer {token}"
        line = _AUTHORIZATION.sub(rf"\g<prefix>{REDACTED}", line)
    line = _BEARER.sub(rf"\g<prefix>{REDACTED}", line)
    line = _COOKIE.sub(_COOKIE_IN_CODE if code else _COOKIE_IN_TEXT, line)
    line = _URL_CREDENTIALS.sub(_url_credentials, line)
    line = _DSN_CREDENTIALS.sub(_dsn_credentials, line)
    line = _TOKENS.sub(REDACTED, line)
    return _KEY_VALUE.sub(_KEY_VALUE_IN_CODE if code else _KEY_VALUE_IN_TEXT, line)


def redact_text(text: str) -> str:
    """`text` with every credential replaced by `[REDACTED]`; ordinary text is unchanged.

    Covers PEM private keys, JWTs, AWS access keys and secret-key assignments, GitHub,
    Slack, Anthropic, OpenAI-style sk-, Stripe and Google keys, Authorization and Cookie
    headers, credentials in URLs and DSNs, and `key=value` / `key: value` / JSON pairs whose
    key names a secret (password, passwd, pwd, secret, token, api_key, apikey, access_key,
    private_key, client_secret, ...).
    """
    text = _PEM.sub(_pem, text)
    if 'File "' not in text:
        return _redact_line(text, code=False)
    out: list[str] = []
    plain: list[str] = []
    file_indent: int | None = None
    for line in text.split("\n"):
        file_line = _PY_FILE_LINE.match(line)
        indent_match = _INDENT.match(line)
        indent = len(indent_match["indent"]) if indent_match else 0
        is_code = file_line is None and file_indent is not None and indent > file_indent
        if file_line:
            file_indent = len(file_line["indent"])
        elif not is_code:
            file_indent = None
        if is_code:
            if plain:
                out.append(_redact_line("\n".join(plain), code=False))
                plain = []
            out.append(_redact_line(line, code=True))
        else:
            plain.append(line)
    if plain:
        out.append(_redact_line("\n".join(plain), code=False))
    return "\n".join(out)


def redact_code(text: str) -> str:
    """Source code with its credentials redacted: private keys, token-shaped secrets and quoted
    literals assigned to a secret's name; `token = get_token()` names a variable and stays."""
    text = _PEM.sub(_pem, text)
    return "\n".join(_redact_line(line, code=True) for line in text.split("\n"))


# Languages where an unquoted `password = x` names a variable; anywhere else (configuration,
# shell, .env, prose) it is a literal value.
_CODE_SUFFIXES = frozenset(
    {".py", ".pyi", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".go", ".java", ".kt",
     ".kts", ".scala", ".rb", ".rs", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".php",
     ".swift", ".m", ".lua", ".ex", ".exs", ".erl", ".clj", ".dart"}
)  # fmt: skip
_HUNK = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+\d+(?:,(?P<new>\d+))? @@(?P<tail>.*)$")
_DIFF_FILE = re.compile(r"^(?:\+\+\+ b/|--- a/|diff --git a/\S+ b/)(?P<path>\S+)")


_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<language>[\w+-]*)$")


def redactor_for(path: str) -> Callable[[str], str]:
    """How text stored or shown under `path` is redacted: unified diffs line by line for the
    language of each file, source code by `redact_code`, Markdown by `redact_markdown`,
    everything else by `redact_text`."""
    name = path.rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix in (".diff", ".patch"):
        return redact_diff
    if suffix == ".md":
        return redact_markdown
    return redact_code if suffix in _CODE_SUFFIXES else redact_text


def redact_markdown(text: str) -> str:
    """Markdown with its credentials redacted: a fenced block tagged `diff` as a diff (so the
    change still reads as it is), everything else as text."""
    out: list[str] = []
    run: list[str] = []  # lines since the last fence line
    closing: str | None = None  # the fence that ends the open diff block
    for line in text.split("\n"):
        opening = _FENCE.match(line) if closing is None else None
        if opening and opening["language"] == "diff":
            out.extend([redact_text("\n".join(run)), line] if run else [line])
            run, closing = [], opening["fence"]
        elif closing is not None and line == closing:
            out.extend([redact_diff("\n".join(run)), line] if run else [line])
            run, closing = [], None
        else:
            run.append(line)
    if run or not out:
        out.append((redact_diff if closing else redact_text)("\n".join(run)))
    return "\n".join(out)


def redact_diff(text: str) -> str:
    """A unified diff with the credentials of its lines redacted, context lines included.

    Each hunk line loses its secrets by the rules of its file's language (`redactor_for`),
    so a reviewer still reads the change as it is; the +/-/space prefixes, headers and hunk
    counts stay, so the diff keeps its shape (it no longer applies where a line changed: what
    is applied is the edits, never this text).
    """
    text = _PEM.sub(_pem, text)
    out: list[str] = []
    redact: Callable[[str], str] = redact_code
    old = new = 0
    for line in text.split("\n"):
        if (old > 0 or new > 0) and line[:1] in (" ", "-", "+", "\\"):
            prefix, body = line[:1], line[1:]
            old -= prefix in (" ", "-")
            new -= prefix in (" ", "+")
            out.append(prefix + redact(body))
            continue
        old = new = 0
        hunk = _HUNK.match(line)
        if hunk:
            old, new = int(hunk["old"] or 1), int(hunk["new"] or 1)
            out.append(line[: hunk.start("tail")] + redact(hunk["tail"]))
            continue
        if file := _DIFF_FILE.match(line):
            redact = redactor_for(file["path"])
            out.append(redact_code(line))
        elif line[:1] in (" ", "+", "-") and not line.startswith(("--- ", "+++ ")):
            out.append(line[:1] + redact(line[1:]))  # a hunk line without its header
        else:
            out.append(redact_code(line))
    return "\n".join(out)


def redact_value(value: Any, redact: Callable[[str], str] = redact_text) -> Any:
    """`value` with every string in it redacted, however deep in lists and mappings it sits
    (mapping keys too); other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, redact) for item in value)
    if isinstance(value, dict):
        return {redact_value(k, redact): redact_value(v, redact) for k, v in value.items()}
    return value


def _redact_code(code: str | None) -> str | None:
    return None if code is None else _redact_line(code, code=True)


def _clip(model: type[BaseModel], name: str, value: Any) -> Any:
    """Keep a redacted value within its field's max_length ([REDACTED] can be longer)."""
    if not isinstance(value, str):
        return value
    for item in model.model_fields[name].metadata:
        limit = getattr(item, "max_length", None)
        if isinstance(limit, int):
            return value[:limit]
    return value


def redact_event(event: ErrorEvent) -> ErrorEvent:
    """A copy of `event` with the message, traceback, frame source lines and tags redacted.

    Tags whose key names a credential lose their whole value; other tag values go through
    `redact_text`.
    """
    error = event.error.model_copy(
        update={"message": _clip(ErrorInfo, "message", redact_text(event.error.message))}
    )
    frames = [
        frame.model_copy(update={"code": _clip(Frame, "code", _redact_code(frame.code))})
        for frame in event.frames
    ]
    traceback = None if event.traceback is None else redact_text(event.traceback)
    tags = {
        key: REDACTED if is_sensitive_tag(key) else redact_text(value)
        for key, value in event.tags.items()
    }
    return event.model_copy(
        update={
            "error": error,
            "traceback": _clip(ErrorEvent, "traceback", traceback),
            "frames": frames,
            "tags": tags,
        }
    )
