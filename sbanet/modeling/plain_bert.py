"""A BERT encoder in plain PyTorch for inference start-up: the same computation and the same
parameter names as transformers' ``BertModel`` (without its pooler), loaded without importing
transformers (whose import is most of a small command's start-up).

What it covers: absolute position embeddings, post-LayerNorm encoder layers with exact (erf)
GELU, bidirectional attention with a padding mask, no pooler: the BERT family SBANet's text
encoder uses (bert-base-uncased, all-MiniLM-L6-v2). :func:`plain_bert_supported` says whether a
checkpoint's ``config.json`` is such a model; anything else stays on transformers.
:func:`load_plain_bert` reads a local BERT directory (``config.json`` + ``model.safetensors``);
:class:`MetaInitSkipped` is how it (and :func:`sbanet.build.build_model`) builds modules on the
meta device without initialising them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# the architecture fields the plain encoder needs (transformers.BertConfig's names)
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
# BertConfig's defaults for the fields a config may leave out
DEFAULTS: Mapping[str, Any] = {
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}
# transformers' buffers (recomputed here) that a BERT weights file may still hold
BUFFER_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


class MetaInitSkipped(TorchFunctionMode):
    """Inside: random initialisation (``normal_``) of a meta tensor is skipped. A meta tensor
    holds no values to fill, and the meta kernel of ``normal_`` imports ``torch._dynamo`` on its
    first use (2-3 s of a command's start-up) only to compute nothing."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # Tensor.normal_(t, ...) or torch.nn.init.normal_(tensor=t, ...)
        target = args[0] if args else kwargs.get("tensor")
        if getattr(func, "__name__", "") == "normal_" and getattr(target, "is_meta", False):
            return target
        return func(*args, **kwargs)


def plain_bert_supported(fields: Mapping[str, Any]) -> bool:
    """Whether a BERT config (``config.json`` fields) is one the plain encoder computes exactly:
    a ``bert`` model with exact GELU, absolute positions, an encoder (not a decoder)."""
    return (
        fields.get("model_type", "bert") == "bert"
        and all(k in fields for k in REQUIRED_FIELDS)
        and fields.get("hidden_act", "gelu") == "gelu"
        and fields.get("position_embedding_type", "absolute") == "absolute"
        and not fields.get("is_decoder", False)
        and not fields.get("add_cross_attention", False)
    )


class BertEmbeddings(nn.Module):
    """Word + position + token-type (all type 0) embeddings, LayerNorm, dropout."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        dim = int(arch["hidden_size"])
        self.word_embeddings = nn.Embedding(int(arch["vocab_size"]), dim)
        self.position_embeddings = nn.Embedding(int(arch["max_position_embeddings"]), dim)
        self.token_type_embeddings = nn.Embedding(int(arch["type_vocab_size"]), dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=float(arch["layer_norm_eps"]))
        self.dropout = nn.Dropout(float(arch["hidden_dropout_prob"]))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids -> ``[B, L, D]``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention (queries, keys, values from the same tokens)."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        dim = int(arch["hidden_size"])
        self.heads = int(arch["num_attention_heads"])
        if dim % self.heads:
            raise ValueError(f"hidden_size {dim} is not a multiple of num_attention_heads {self.heads}")
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = float(arch["attention_probs_dropout_prob"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, D]``, bias ``[B, 1, 1, L]`` (0 for real keys, -inf-like for padding) -> ``[B, L, D]``."""
        b, length, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, h, L, D / h]
            return t.view(b, length, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(x)),
            heads(self.value(x)),
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return out.transpose(1, 2).reshape(b, length, dim)


class DenseNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``: BERT's post-LN sub-layer output."""

    def __init__(self, arch: Mapping[str, Any], width: int) -> None:
        super().__init__()
        dim = int(arch["hidden_size"])
        self.dense = nn.Linear(width, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=float(arch["layer_norm_eps"]))
        self.dropout = nn.Dropout(float(arch["hidden_dropout_prob"]))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, width]``, residual ``[B, L, D]`` -> ``[B, L, D]``."""
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.self = BertSelfAttention(arch)
        self.output = DenseNorm(arch, int(arch["hidden_size"]))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.dense = nn.Linear(int(arch["hidden_size"]), int(arch["intermediate_size"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention, then the feed-forward block, each followed by add & LayerNorm."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.attention = BertAttention(arch)
        self.intermediate = BertIntermediate(arch)
        self.output = DenseNorm(arch, int(arch["intermediate_size"]))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` -> ``[B, L, D]``."""
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(arch) for _ in range(int(arch["num_hidden_layers"])))


class PlainBertModel(nn.Module):
    """``BertModel(add_pooling_layer=False)`` in plain PyTorch: its state-dict keys, its output
    (``last_hidden_state``). ``arch``: BertConfig fields (missing optional ones take
    BertConfig's defaults)."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        if not plain_bert_supported(arch):
            raise ValueError(f"the plain BERT encoder does not compute this configuration: {dict(arch)}")
        arch = {**DEFAULTS, **arch}
        self.embeddings = BertEmbeddings(arch)
        self.encoder = BertEncoder(arch)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask ``[B, L]`` (1 = real token) -> last hidden states ``[B, L, D]``."""
        x = self.embeddings(input_ids)
        # padding keys get the dtype's lowest value added (as transformers does), never -inf:
        # a row of only padding then averages instead of giving NaN
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def read_bert_config(directory: str | Path) -> dict[str, Any]:
    """A local BERT directory's ``config.json`` fields."""
    return json.loads((Path(directory) / "config.json").read_text())


def load_plain_bert(directory: str | Path) -> PlainBertModel:
    """The BERT of a local directory (``config.json`` + ``model.safetensors``, keys with or
    without a ``bert.`` prefix) as a :class:`PlainBertModel`; ``ValueError`` when its config is
    not one the plain encoder computes or its weights do not match."""
    from safetensors.torch import load_file

    directory = Path(directory)
    fields = read_bert_config(directory)
    with torch.device("meta"), MetaInitSkipped():  # no initialisation: every weight is assigned below
        model = PlainBertModel(fields)
    state = load_file(str(directory / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    state = {k: v.float() for k, v in state.items() if k not in BUFFER_KEYS and not k.startswith("pooler.")}
    expected = model.state_dict().keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{directory}: BERT weights do not match its config (missing {missing}, unexpected {unexpected})"
        )
    model.load_state_dict(state, assign=True)
    return model
