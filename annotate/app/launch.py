"""Build the app from settings, and the safe ``launch()`` arguments (used by ``app.py`` and tests).

Nothing here runs at import time: :func:`build_app` opens the store, loads the model (once, for
every user) and builds the UI when called.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotate.app.backend import Backend, SharedModel
from annotate.app.downloads import Downloads
from annotate.app.examples import example_inputs
from annotate.app.ui import build_ui, launch_options
from annotate.store.database import make_store
from annotate.store.runs import active_model
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import ENV_VAR, default_model_source

from ..jobs.finetune_quick import DEFAULT_ADAPT_AFTER

AUTH_ENV = "SBANET_AUTH"
DEFAULT_MAX_FILE_SIZE = "200mb"


@dataclass
class AppSettings:
    """What ``app.py``'s command line (and the environment) configure."""

    model: str | None = None  # checkpoint dir or hub id; None: $SBANET_MODEL, the store's active model, shipped
    data_dir: str | None = None  # None: $SBANET_DATA_DIR or ./sbanet-data
    store_url: str | None = None  # None: $SBANET_STORE_URL or SQLite in the data folder
    host: str | None = None  # None: $GRADIO_SERVER_NAME or 127.0.0.1 (Spaces sets 0.0.0.0)
    port: int | None = None  # None: $GRADIO_SERVER_PORT or 7860
    auth: list[tuple[str, str]] = field(default_factory=list)
    share: bool = False
    concurrency: int = 1  # model runs at once (a 2-core CPU gains nothing from more)
    device: str | None = None  # torch device of the model; None: cuda when available, else cpu
    precision: str = "auto"  # sbanet.inference.precision: auto | fp32 | bf16 | fp16 (CUDA)
    max_file_size: str = DEFAULT_MAX_FILE_SIZE
    examples: bool = True  # the shipped real aerial examples in the Segment tab
    adapt_after: int = DEFAULT_ADAPT_AFTER  # saved corrections before "Adapt to my corrections" is offered


def parse_auth(text: str | None) -> list[tuple[str, str]]:
    """``"ana:secret,ben:pw"`` -> ``[("ana", "secret"), ("ben", "pw")]`` (blank -> no auth)."""
    pairs = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        user, sep, password = part.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth / ${AUTH_ENV} must be user:password[,user:password...], got {part.strip()!r}")
        pairs.append((user, password))
    return pairs


def model_source(settings: AppSettings, store: Any) -> str | None:
    """``--model`` or ``$SBANET_MODEL``; else None when the store has an active model (a fine-tuned
    version someone activated); else the shipped default (:func:`sbanet.inference.shipped.default_model_source`)."""

    explicit = settings.model or os.environ.get(ENV_VAR, "").strip() or None
    if explicit:
        return default_model_source(explicit)
    with store.Session.begin() as session:
        if active_model(session) is not None:
            return None
    return default_model_source(None)


def build_app(settings: AppSettings) -> tuple[Any, Any]:
    """Open the store, load the model, build the UI: ``(demo, backend)`` ready to launch."""
    import torch

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    store = make_store(settings.store_url, settings.data_dir)
    load = functools.partial(Predictor.from_pretrained, device=device, precision=settings.precision)
    backend = Backend(store, SharedModel(load), Downloads())
    backend.load_model(model_source(settings, store))
    backend.jobs.recover()  # fine-tune runs a killed app left "running" are requeued
    # a folder of its own: the downloads root is pruned of folders older than an hour
    examples = example_inputs(tempfile.mkdtemp(prefix="sbanet-examples-")) if settings.examples else None
    demo = build_ui(
        backend, examples=examples, concurrency_limit=settings.concurrency, adapt_after=settings.adapt_after
    )
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo, backend


def blocked_paths(backend: Any) -> list[str]:
    """The data folder (database, images, fine-tuned checkpoints), the SQLite file wherever it
    is, and a local model checkpoint: never served, whatever a request asks for."""
    paths = {str(backend.store.data_dir)}
    database = backend.store.engine.url.database
    if backend.store.engine.url.get_backend_name() == "sqlite" and database:
        paths.add(str(Path(database).resolve()))
    source = backend.model.source
    if source and Path(source).exists():
        paths.add(str(Path(source).resolve()))
    return sorted(paths)


def launch_kwargs(settings: AppSettings, backend: Any) -> dict[str, Any]:
    """The arguments for ``demo.launch`` that make it safe (see the module and README)."""

    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "auth": settings.auth or None,
        "auth_message": "Sign in: your user name is saved with your corrections." if settings.auth else None,
        "share": settings.share,
        "max_file_size": settings.max_file_size,
        "blocked_paths": blocked_paths(backend),
        "allowed_paths": [],
        "show_error": True,  # refusals say what and why (user_errors keeps server paths out of them)
        "footer_links": ["api", "settings"],
        **launch_options(),  # the layout's CSS and the page's Ctrl+S
    }
