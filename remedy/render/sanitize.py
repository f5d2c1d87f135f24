"""The one sanitizer for text that leaves the building: PR, commit, issue and Slack text.

Error text, repository content (commit subjects, paths, test names) and model output are
written by someone else. Whatever they say, what Remedy posts must stay inert: it pings
nobody, renders no HTML or image, links nowhere but to Remedy's own pages, closes no issue,
and hides nothing from the reader. Every untrusted string goes through one function here,
which redacts its credentials (remedy.redact) and shows invisible characters, then:

- GitHub Markdown: untrusted text is always code, a fenced block or an inline code span
  whose backtick run is longer than any inside it (GitHub renders no mention, HTML, image
  or link in code); Remedy's own link is the only Markdown link.
- Plain text (titles, commit messages, where GitHub still links mentions, URLs and issue
  references, and `Fixes #12` closes an issue): the `@` of a mention and the `#` of a
  reference become their full-width look-alikes, `https://` becomes `https[:]//`.
- Slack mrkdwn: `&`, `<` and `>` are escaped (so `<!channel>`, `<@U123>` and `<url|label>`
  are text), a backtick inside code becomes a modifier grave accent so no fence can be
  closed, and text objects are sent `verbatim` (remedy.render.slack) so Slack links nothing
  by itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from remedy.redact import redact_text

# Format characters (zero-width spaces and joiners, bidi embeddings, overrides and isolates,
# the BOM, tag characters), line and paragraph separators and control characters other than
# newline and tab: each can hide or reorder what a reviewer reads.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zl", "Zp", "Cs"})
_KEPT = frozenset("\n\t")
_BACKTICKS = re.compile(r"`+")
_FENCE_RUN = re.compile(r"`{3,}")
_MENTION = re.compile(r"(?<![\w@./+-])@(?=[A-Za-z0-9_])")
_REFERENCE = re.compile(r"(?<![&#])#(?=\d)")
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}):(?=//)")
_WWW = re.compile(r"(?i)\bwww\.")
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_~\[\]<>!&|]")
_INERT_AT = "\uff20"  # FULLWIDTH COMMERCIAL AT: reads as @, mentions nobody
_INERT_HASH = "\uff03"  # FULLWIDTH NUMBER SIGN: reads as #, references no issue
_INERT_BACKTICK = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: reads as `, closes no code


def _is_invisible(char: str) -> bool:
    return char not in _KEPT and unicodedata.category(char) in _INVISIBLE_CATEGORIES


def visible(text: str) -> str:
    """`text` with every invisible or reordering character shown as `[U+202E]`; CRLF is LF."""
    text = text.replace("\r\n", "\n")
    if not any(_is_invisible(char) for char in text):
        return text
    return "".join(f"[U+{ord(char):04X}]" if _is_invisible(char) else char for char in text)


def _clean(text: str) -> str:
    return visible(redact_text(text))


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------- GitHub Markdown


def fenced(text: str, language: str = "", redact: Callable[[str], str] = redact_text) -> str:
    """A fenced code block of `text` that no backtick run inside it can close early."""
    body = visible(redact(text)).rstrip()
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"


def code(text: str) -> str:
    """`text` on one line as an inline code span that its own backticks cannot close."""
    body = one_line(_clean(text)) or " "
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if body[0] == "`" or body[-1] == "`" else ""
    return f"{ticks}{pad}{body}{pad}{ticks}"


def inline(text: str) -> str:
    """Short untrusted text (a commit subject, a name, a test summary) on one line of Markdown
    prose: `plain`, with every character that could open HTML, an image, a link, emphasis
    or an entity backslash-escaped, so it renders as the very text it is. Safe in a GFM
    table cell too (`|` is escaped)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", one_line(plain(text)))


def own_link(url: str, label: str) -> str:
    """A Markdown link Remedy builds to its own page (the Temporal UI); never untrusted."""
    safe = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C")
    return f"[{label}]({safe.replace('>', '%3E')})"


# ---------------------------------------------------------------------------- plain text


def plain(text: str) -> str:
    """Untrusted text for a plain-text field (PR or issue title, commit message): no mention,
    issue reference or link is left for GitHub to find."""
    text = _REFERENCE.sub(_INERT_HASH, _MENTION.sub(_INERT_AT, _clean(text)))
    return _WWW.sub("www[.]", _SCHEME.sub(r"\1[:]", text))


# ---------------------------------------------------------------------------- Slack


def slack_escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(text: str, *, autolinked: bool = False) -> str:
    """Untrusted text for Slack mrkdwn. `autolinked`: for a message's plain `text`, which Slack
    links by itself (no `verbatim` there), so mentions and URLs are defused as in `plain`."""
    text = slack_escape(plain(text) if autolinked else _clean(text))
    # A single backtick is inline code; three open a code block the text could leave open.
    return _FENCE_RUN.sub(lambda run: _INERT_BACKTICK * len(run[0]), text)


def slack_code(text: str, redact: Callable[[str], str] = redact_text) -> str:
    """Untrusted text for inside Slack backticks: no backtick of its own can close them."""
    return slack_escape(visible(redact(text))).replace("`", _INERT_BACKTICK)


def slack_quote(text: str) -> str:
    """Untrusted prose (model output) as a Slack block quote, so it reads as quoted."""
    return "\n".join(f"> {line}" for line in slack_text(text.strip()).split("\n"))
