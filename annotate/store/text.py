"""User text in the app: limits on the way in, escaping on the way out.

Everything a user typed (expressions, notes, names, file names) may be shown to *another* user
in Markdown components, which render HTML. :func:`markdown_text` writes such a string so that it
shows literally: every character Markdown or HTML could read as markup becomes a numeric
character reference, so ``<img src=...>`` is text (the browser fetches nothing), ``|`` cannot
split a table cell, and ``*``, `````, ``[...](...)`` or ``http://`` make no emphasis, code or link.
Never put the result inside a code span (references are not decoded there); outside tables,
:func:`code_text` shows a string literally as code instead (a ``|`` would still split a table cell).
"""

from __future__ import annotations

import re
from typing import Any

from sbanet.text_rules import check_text

MAX_NOTE_CHARS = 2_000
MAX_NAME_CHARS = 100  # annotator names, as typed or signed in
MAX_REQUEST_ID_CHARS = 64
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# characters with a meaning in Markdown (CommonMark + GitHub tables / autolinks) or HTML
MARKUP = frozenset("\\`*_{}[]()<>#+-.!|~&\"'=:/$@")


def markdown_text(value: Any) -> str:
    """``value`` as Markdown that renders as exactly this text on one line (see the module)."""
    text = " ".join(str(value).split())
    return "".join(f"&#{ord(char)};" if char in MARKUP else char for char in text)


def code_text(value: Any) -> str:
    """``value`` as an inline code span on one line, fenced with more backticks than it holds."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def check_note(note: Any) -> str | None:
    """A review note: plain text (line breaks allowed) up to :data:`MAX_NOTE_CHARS`; blank -> None."""
    return check_text(note, "the note", MAX_NOTE_CHARS, multiline=True) or None


def check_name(name: Any, what: str = "the annotator name") -> str:
    """A person's name on one line, spaces collapsed, up to :data:`MAX_NAME_CHARS` (may be blank)."""
    return " ".join(check_text(name, what, MAX_NAME_CHARS).split())


def check_request_id(value: Any) -> str | None:
    """A client's idempotency key (1-64 of ``A-Z a-z 0-9 . _ : -``, e.g. a UUID); blank -> None."""
    text = check_text(value, "the request id", MAX_REQUEST_ID_CHARS)
    if not text:
        return None
    if not REQUEST_ID.fullmatch(text):
        raise ValueError(
            f"the request id {text!r} may only hold letters, digits and . _ : - "
            f"(1 to {MAX_REQUEST_ID_CHARS} characters; a UUID works)"
        )
    return text
