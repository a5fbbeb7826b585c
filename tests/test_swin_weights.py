"""``visual_weights`` as a local file (offline clusters): timm safetensors and the original Swin
``.pth`` LAVT initialises from, on a tiny random Swin saved to disk; mismatches are named."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer

from sbanet.build import sbanet_tiny_config
from sbanet.modeling.swin_weights import is_local_weights, read_state_dict
from sbanet.modeling.visual_encoder import SwinEncoder


def source_swin(config, num_classes: int = 5) -> SwinTransformer:
    """A random Swin of the config's architecture, with a classifier head (as hub files have)."""
    torch.manual_seed(1)
    return SwinTransformer(
        img_size=config.image_size, embed_dim=config.embed_dim, depths=tuple(config.depths),
        num_heads=tuple(config.num_heads), window_size=config.window_size, num_classes=num_classes,
        strict_img_size=False,
    )  # fmt: skip


def original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm keys -> the Microsoft Swin / LAVT layout: patch merging at the end of the previous
    stage, ``head.weight``, plus the buffers those checkpoints carry."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value.clone()
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    return out


def encoder_matches(encoder: SwinEncoder, source: SwinTransformer) -> None:
    reference = source.state_dict()
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, reference[key]), key


@pytest.fixture
def config_for(tmp_path):
    return lambda name: sbanet_tiny_config(visual_weights=str(tmp_path / name))


def test_timm_safetensors_file(config_for, tmp_path):
    config = config_for("model.safetensors")
    source = source_swin(config)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    encoder_matches(SwinEncoder(config, pretrained=True), source)
    random = SwinEncoder(config)  # without pretrained=True the file is not read
    assert not torch.equal(random.patch_embed.proj.weight, source.patch_embed.proj.weight)


def test_lavt_swin_pth_in_the_original_layout(config_for, tmp_path):
    config = config_for("swin_base_patch4_window12_384_22k.pth")
    source = source_swin(config)
    torch.save({"model": original_layout(source.state_dict())}, tmp_path / "swin_base_patch4_window12_384_22k.pth")
    encoder_matches(SwinEncoder(config, pretrained=True), source)
    # a segmentation model's backbone (LAVT-style "backbone." keys, DDP's "module.") unwraps too
    wrapped = {f"module.backbone.{k}": v for k, v in original_layout(source.state_dict()).items()}
    wrapped["module.classifier.weight"] = torch.zeros(2, 8)
    torch.save({"state_dict": wrapped}, tmp_path / "lavt.pth")
    encoder_matches(SwinEncoder(config_for("lavt.pth"), pretrained=True), source)


def test_bad_local_files_are_named(config_for, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        SwinEncoder(config_for("missing.safetensors"), pretrained=True)
    wider = sbanet_tiny_config(embed_dim=32)
    save_file(source_swin(wider).state_dict(), str(tmp_path / "wider.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit this Swin.*of another shape"):
        SwinEncoder(config_for("wider.safetensors"), pretrained=True)
    torch.save({"model": {"x": object()}}, tmp_path / "code.pth")  # not plain tensors: refused unread
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(tmp_path / "code.pth")
    assert is_local_weights("/models/swin.pth") and not is_local_weights("swin_base_patch4_window12_384.ms_in22k")
