"""The real app on loopback for end-to-end tests (imported by test_app_api / test_app_browser).

``running_app`` saves the random-weight tiny model as a checkpoint, builds the app exactly as
``app.py`` does (store in a temporary data folder) and launches it in this process on a free
port, so tests can call it over HTTP and also look into its store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from annotate.app.browser import CHROMIUM_ENV, DEFAULT_CHROMIUM, chromium_path, free_port

# the marks of every browser test module: slow, and skipped without a Chromium to drive
BROWSER_TEST_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None, reason=f"no Chromium at ${CHROMIUM_ENV} or {DEFAULT_CHROMIUM} (apt install chromium)"
    ),
]
VIEWPORTS = {"laptop": (1280, 900), "phone": (390, 844)}  # the laptop and phone the canvas tests use

__all__ = ["BROWSER_TEST_MARKS", "VIEWPORTS", "free_port"]


# random weights find nothing with any confidence: trust every mask, so each is saved as a draft
TRUST_EVERYTHING = {"confidence": {"min_area_fraction": 0, "min_mean_probability": 0, "confident_mean_probability": 0}}


def tiny_checkpoint(directory: Path) -> Path:
    import torch

    from sbanet import sbanet_tiny
    from sbanet.checkpoint import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(sbanet_tiny().eval(), directory / "tiny-model", metadata=TRUST_EVERYTHING)


def scene_png(path: Path, height: int = 150, width: int = 210) -> Path:
    """A small RGB scene: sand, a blue pond, a grey road (values the tests can reason about)."""
    rng = np.random.default_rng(0)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (196, 178, 140)
    image[20:70, 30:110] = (40, 90, 160)
    image[:, 150:170] = (110, 110, 110)
    image = np.clip(image.astype(np.int16) + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path


@dataclass
class RunningApp:
    url: str
    backend: Any
    demo: Any
    data_dir: Path


@contextmanager
def running_app(directory: Path, **settings: Any) -> Iterator[RunningApp]:
    """Launch the app (tiny model, fresh store under ``directory``) and close it afterwards."""
    from annotate.app.launch import AppSettings, build_app, launch_kwargs

    checkpoint = tiny_checkpoint(directory)
    options = {"model": str(checkpoint), "data_dir": str(directory / "data"), "host": "127.0.0.1", **settings}
    options.setdefault("port", free_port())
    app_settings = AppSettings(**options)
    demo, backend = build_app(app_settings)
    kwargs = launch_kwargs(app_settings, backend)
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield RunningApp(f"http://127.0.0.1:{app_settings.port}/", backend, demo, directory / "data")
    finally:
        demo.close()
        backend.store.close()
