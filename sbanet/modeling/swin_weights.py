"""Pretrained Swin weights for the visual encoder, from the hub or from a local file.

``SBANetConfig.visual_weights`` names the source:

* a timm model name, e.g. ``swin_base_patch4_window12_384.ms_in22k`` (the paper's ImageNet-22K
  Swin-B, window 12, 384 px), downloaded by timm from the Hugging Face hub;
* a local file, for clusters without internet: timm's ``model.safetensors`` (or
  ``pytorch_model.bin``) of that model, or the original Microsoft Swin checkpoint LAVT and RMSIN
  initialise from, ``swin_base_patch4_window12_384_22k.pth`` (``{"model": state_dict}``, patch
  merging at the *end* of a stage). Keys under ``module.`` or ``backbone.`` (a DDP or
  segmentation wrapper) are unwrapped as LAVT's loader does.

Local files are read without running code (safetensors, or ``torch.load(weights_only=True)``),
converted to timm's layout by timm's own ``checkpoint_filter_fn`` (the merge moves to the start of
the next stage, the relative-position tables are resized when the window differs), and must then
fit the encoder exactly apart from the classifier head: anything else is a ``ValueError`` naming
the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WRAPPER_PREFIXES = ("module.", "backbone.")


def is_local_weights(source: str | Path) -> bool:
    """Whether ``source`` names a local weights file rather than a timm model name."""
    path = Path(source)
    return path.suffix.lower() in LOCAL_SUFFIXES or path.is_file()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or PyTorch weights file, unwrapped from ``{"model": ...}`` /
    ``{"state_dict": ...}`` and from ``module.`` / ``backbone.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"visual_weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a pickle naming code, or not a torch file at all
            raise ValueError(f"cannot read {path.name} as plain tensors (weights_only): {exc}") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} holds no state dict of tensors")
    for prefix in WRAPPER_PREFIXES:  # keep the wrapped part only (a segmentation model's backbone)
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_swin_weights(swin: nn.Module, source: str | Path) -> None:
    """Load a local Swin checkpoint into a timm ``SwinTransformer`` (in place); the classifier
    head is ignored, every other tensor must match by name and shape."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    name = Path(source).name
    state = checkpoint_filter_fn(read_state_dict(source), swin)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    expected = {k: v for k, v in swin.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]]
        raise ValueError(
            f"{name} does not fit this Swin (embed_dim, depths, num_heads of the config): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of another shape (e.g. {shapes})"
        )
    swin.load_state_dict(state, strict=False)


def pretrained_swin(source: str, **kwargs: Any) -> nn.Module:
    """A timm ``SwinTransformer(**kwargs)`` with pretrained weights from ``source``: a local file
    (:func:`load_swin_weights`) or a timm model name (downloaded by timm)."""
    import timm
    from timm.models.swin_transformer import SwinTransformer

    if is_local_weights(source):
        swin = SwinTransformer(**kwargs)
        load_swin_weights(swin, source)
        return swin
    return timm.create_model(source, pretrained=True, **kwargs)
