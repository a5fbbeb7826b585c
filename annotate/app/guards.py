"""What every handler of the app shares: a ``ValueError`` (bad input, explained) becomes a readable
refusal (:func:`user_errors`: one log line, no traceback, no server path in the text); the page
shows it as a warning toast and keeps every output (:func:`on_page`); who is acting
(:func:`annotator`); where an upload lies on the server (:func:`uploaded_path`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from annotate.store.text import check_name

ANONYMOUS = "anonymous"
REFUSED_TITLE = "Cannot do that"
LOG = logging.getLogger("annotate.app.handlers")  # the name refusals were always logged under
# an absolute path (POSIX or Windows) of at least two parts: only its last part is shown
SERVER_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"`]+)+[\\/]([^\s\\/'\"`]+)")


def readable(message: str) -> str:
    """A refusal as users see it: server paths (Gradio's upload folder, the data folder)
    reduced to the file name."""
    return SERVER_PATH.sub(r"\1", message)


def refusal(exc: ValueError, action: str) -> str:
    """The readable text of a refused ``action``, logged as one line (no traceback)."""
    message = readable(str(exc))
    LOG.info("refused %s: %s", action, message)
    return message


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``ValueError`` (bad input, explained) into a ``gr.Error``, logged as one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise gr.Error(refusal(exc, fn.__name__), title=REFUSED_TITLE, print_exception=False) from None

    return wrapper


def on_page(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """The page's event for a handler with ``outputs`` outputs: a refusal is shown as a warning
    and every output is left as it was (``gr.skip()``), instead of an error over each of them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            gr.Warning(exc.message, title=exc.title)
            return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))

    wrapper.__name__ = f"{fn.__name__}_on_page"  # the API endpoint keeps the handler's own name
    return wrapper


def annotator(request: gr.Request | None, typed: str | None, required: bool = False) -> str:
    """Who is acting: the signed-in user (with ``--auth``), else the typed name."""
    user = getattr(request, "username", None) if request is not None else None
    if user:
        return str(user)
    name = check_name(typed)
    if name:
        return name
    if required:
        raise ValueError("type your name in the Annotator box at the top: corrections and reviews record who made them")
    return ANONYMOUS


def uploaded_path(file: Any) -> str:
    """The server-side path of a ``gr.File`` value (a path string or a FileData-like object)."""
    if file is None:
        raise ValueError("upload an image first (PNG, JPEG or TIFF/GeoTIFF), or pick an example")
    return str(getattr(file, "path", None) or getattr(file, "name", None) or file)
