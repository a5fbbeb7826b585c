"""Models saved before the paper-fidelity fields existed keep loading and computing the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sbanet import sbanet_tiny
from sbanet.checkpoint import FORMAT_VERSION, load_pretrained, save_pretrained
from sbanet.config import LEGACY_VALUES, SBANetConfig
from sbanet.default_model import SHIPPED_MODEL

REFERENCE = Path(__file__).parent / "data" / "shipped_model_reference.json"


def reference_probability(model, tokenizer) -> torch.Tensor:
    """The shipped model's fp32 foreground probability ``[S, S]`` on a fixed, formula-made image."""
    size = model.config.image_size
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([torch.sin(9 * x) * torch.cos(5 * y), torch.cos(7 * x * y), x - y])[None].float()
    text = tokenizer(
        ["the large green area at the top left"],
        padding="max_length",
        max_length=model.config.max_tokens,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model.float().eval()(image, text["input_ids"], text["attention_mask"])
    return torch.softmax(logits, dim=1)[0, 1]


def test_shipped_model_computes_what_it_computed_before():
    """Captured from the code before the fidelity changes (format_version 1 checkpoint)."""
    header = json.loads((SHIPPED_MODEL / "config.json").read_text())
    assert header["format_version"] == 1
    model, tokenizer = load_pretrained(SHIPPED_MODEL)
    for name, value in LEGACY_VALUES.items():
        assert getattr(model.config, name) == value
    expected = json.loads(REFERENCE.read_text())
    probability = reference_probability(model, tokenizer)
    stride = expected["stride"]
    np.testing.assert_allclose(probability[::stride, ::stride].numpy(), np.array(expected["probability"]), atol=2e-5)
    assert abs(probability.mean().item() - expected["mean"]) < 2e-6


def test_version_1_configs_get_legacy_values_and_new_saves_are_explicit(tmp_path, tokenizer):
    legacy = {k: v for k, v in sbanet_tiny().config.to_dict().items() if k not in LEGACY_VALUES}
    old = SBANetConfig.from_dict({**legacy, "query_mode": "self"}, version=1)
    assert {k: getattr(old, k) for k in LEGACY_VALUES} == dict(LEGACY_VALUES)
    assert old.query_mode == "pixel_self"  # version 1's "self" attended over the pixels
    # a training checkpoint's config carries no version: missing fields say it is version 1
    assert SBANetConfig.from_dict(legacy).tcsa_order == "parallel"
    new = SBANetConfig.from_dict(sbanet_tiny().config.to_dict())
    assert new.tcsa_order == "sequential" and new.swin_shift == "lavt" and new.bam_attention == "single"

    model = sbanet_tiny(**{k: old.to_dict()[k] for k in LEGACY_VALUES}).eval()
    save_pretrained(model, tmp_path / "ckpt", tokenizer=tokenizer)
    header = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert header["format_version"] == FORMAT_VERSION == 2
    assert all(k in header["config"] for k in LEGACY_VALUES)
    loaded, _ = load_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    with pytest.raises(ValueError, match="newer"):
        SBANetConfig.from_dict(legacy, version=FORMAT_VERSION + 1)
