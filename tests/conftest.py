"""Shared fixtures. Models are built once per session where tests only read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# No test may reach a model hub: everything runs from the wheels and random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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


@pytest.fixture(scope="session")
def tokenizer():
    from sbanet.modeling.text_encoder import MINILM, load_tokenizer

    return load_tokenizer(MINILM)
