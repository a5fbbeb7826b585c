"""Text that users type, checked before anything runs or is stored.

Every text field (expressions, notes, names) goes through :func:`check_text`: it must be a string
of printable characters within a length limit; an expression through :func:`check_expression`
(the same, whitespace-normalised, non-empty, at most :data:`MAX_EXPRESSION_CHARS`), wherever it
comes from: the library, the app, the store, the scene command line. Control characters are refused, not stripped: a
NUL byte is stored by SQLite but refused by PostgreSQL (after the model has already run), and
the others (escape sequences, backspace, bell) make logs and exports lie about what was typed.
Tabs and, where a field allows several lines, line breaks are the only exceptions.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Unicode categories refused anywhere: control characters (C0, DEL, C1) and lone surrogates
# (which no UTF-8 database or file can hold)
REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
MAX_EXPRESSION_CHARS = 1000


def check_text(value: Any, what: str, max_chars: int | None, *, multiline: bool = False, required: bool = False) -> str:
    """``value`` stripped, or ``ValueError`` naming ``what`` (not a string, longer than
    ``max_chars`` unless that is None, a control character; empty when ``required``). Tabs are
    allowed, line breaks only when ``multiline``."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    allowed = {"\t", "\n", "\r"} if multiline else {"\t"}
    for index, char in enumerate(value):
        if char not in allowed and unicodedata.category(char) in REFUSED_CATEGORIES:
            raise ValueError(
                f"{what} contains the control character U+{ord(char):04X} at position {index + 1}; "
                "type plain text (control characters and NUL bytes are not stored)"
            )
    text = value.strip()
    if required and not text:
        raise ValueError(f"{what} is empty")
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(f"{what} is {len(text):,} characters long; the limit is {max_chars:,}")
    return text


def check_expression(expression: Any) -> str:
    """A non-empty expression of reasonable length, whitespace-normalised, or ``ValueError``."""
    if not isinstance(expression, str):
        raise ValueError(f"an expression must be a string, got {type(expression).__name__}")
    # its own limit below, on the whitespace-normalised text
    text = " ".join(check_text(expression, "the expression", None, multiline=True).split())
    if not text:
        raise ValueError("the expression is empty: describe the object to segment, e.g. 'the water'")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}")
    return text
