"""Shared fixtures. Models are built once per session where tests only read them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before torch loads OpenMP: its idle threads sleep instead of spinning. With the default
# (active) policy each parallel region's waiting thread spins on a core that another process
# needs, and on a loaded 2-core machine the tiny model's 150 training steps took 248 s with two
# threads instead of 17 s with one (26 s with two, passive): the overfit test's timeout under load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Gradio keeps uploads in one cache folder per machine (/tmp/gradio, files named by content hash)
# and an app deletes what it put there when it stops: two test sessions at once (or a session
# beside a running app) deleted each other's identical uploads ("image file not found: pond.png").
# Each session gets its own folder.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="sbanet-tests-gradio-"))
# No test may reach a model hub: everything runs from the wheels and random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real aerial data not found at {path} (../shared/data beside the project root)")
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    from sbanet import sbanet_tiny

    torch.manual_seed(0)
    return sbanet_tiny().eval()


@pytest.fixture(scope="module")
def tiny32():
    """The tiny model at 32 px and 8 tokens (the quick-adaptation tests), one per test module."""
    from sbanet import sbanet_tiny

    torch.manual_seed(0)
    return sbanet_tiny(image_size=32, max_tokens=8).eval()


@pytest.fixture(scope="session")
def tokenizer():
    from sbanet.modeling.text_encoder import MINILM, load_tokenizer

    return load_tokenizer(MINILM)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove this session's Gradio upload folder (made above), never one a user set."""
    import shutil

    folder = Path(os.environ.get("GRADIO_TEMP_DIR", ""))
    if folder.name.startswith("sbanet-tests-gradio-"):
        shutil.rmtree(folder, ignore_errors=True)
