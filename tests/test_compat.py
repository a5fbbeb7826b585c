"""Models saved before the paper-fidelity fields existed keep loading and computing the same."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from numerics import assert_within_drift

from sbanet import sbanet_tiny
from sbanet.build import build_model
from sbanet.checkpoint import FORMAT_VERSION, load_pretrained, save_pretrained
from sbanet.config import LEGACY_VALUES, SBANetConfig

DATA = Path(__file__).parent / "data"
# a format-1 checkpoint written by the code before the fidelity fields (commit 41db638), and the
# probability map that code computed with it (how: "captured_with" in the JSON)
LEGACY_CHECKPOINT, REFERENCE = DATA / "legacy_tiny", DATA / "legacy_tiny_reference.json"


def reference_probability(model, tokenizer, expression: str) -> torch.Tensor:
    """The model's fp32 foreground probability ``[S, S]`` on a fixed, formula-made image."""
    size = model.config.image_size
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([torch.sin(9 * x) * torch.cos(5 * y), torch.cos(7 * x * y), x - y])[None].float()
    text = tokenizer([expression], padding="max_length", max_length=model.config.max_tokens, return_tensors="pt")
    with torch.no_grad():
        logits = model.float().eval()(image, text["input_ids"], text["attention_mask"])
    return torch.softmax(logits, dim=1)[0, 1]


@pytest.mark.numerics
def test_a_version_1_checkpoint_computes_what_it_computed_before():
    """Loaded by today's code, the old checkpoint gets the legacy forms and reproduces the old
    code's output; the same weights in the paper's forms compute something else (so the
    reference tells the two apart)."""
    header = json.loads((LEGACY_CHECKPOINT / "config.json").read_text())
    assert header["format_version"] == 1 and not set(LEGACY_VALUES) & set(header["config"])
    model, tokenizer = load_pretrained(LEGACY_CHECKPOINT)
    for name, value in LEGACY_VALUES.items():
        assert getattr(model.config, name) == value
    expected = json.loads(REFERENCE.read_text())
    probability = reference_probability(model, tokenizer, expected["expression"])
    stride = expected["stride"]
    # The reference was captured on an AVX2 AMD EPYC. Measured against it (benchmarks.numerics_drift,
    # seven kernel paths): up to 5.3e-4 on an AMX Xeon (ONEDNN_MAX_CPU_ISA=AVX2; 1.8e-4 with
    # ATEN_CPU_CAPABILITY=default), up to 5.9e-4 on an AVX-512 Zen 4 (SSE41); the mean moved
    # 6.6e-7 at most. 2e-3 leaves 3x room for CPUs not seen; the legacy forms below move the
    # output by >= 0.06, 30x more, so a wrong computation still fails.
    assert_within_drift(probability[::stride, ::stride], expected["probability"], atol=2e-3, check="legacy probability")
    assert_within_drift(probability.mean(), expected["mean"], atol=1e-5, check="legacy mean probability")
    faithful = {"tcsa_order": "sequential", "swin_shift": "lavt", "bam_attention": "single", "dfs_project_micro": False}
    for name, value in faithful.items():
        other = build_model(dataclasses.replace(model.config, **{name: value}), pretrained=False)
        other.load_state_dict(model.state_dict(), strict=False)  # a form's extra parameters keep their init
        p = reference_probability(other, tokenizer, expected["expression"])
        # 10x the tolerance above: the reference's tolerance cannot hide a wrong form
        assert (p - probability).abs().max() > 2e-2, f"{name}={value} left the output unchanged"


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
