"""Image + expression(s) -> Prediction(mask, probability, attention), numpy in and out.

One :class:`Predictor` can serve concurrent callers (the app's users): it keeps no per-image
state, and the only shared mutable object, the Rust tokenizer, is used under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .image import read_image, to_rgb8
from .modeling.sbanet import SBANet
from .modeling.text_encoder import load_tokenizer, tokenize

MAX_EXPRESSION_CHARS = 1000


@dataclass(frozen=True)
class AttentionMaps:
    """What the model looked at, for one expression (maps at each stage's own resolution).

    tokens: the expression's word pieces, ``[CLS]`` and ``[SEP]`` included.
    pixel_word: per stage ``[h_i, w_i, n_tokens]``: PWAM's attention of each pixel over the words.
    query: per stage ``[h_i, w_i]``: where the learnable query tokens look (Eq. 1, mean over
        tokens; each token's attention sums to 1), or None without learnable tokens.
    word_relevance: per stage ``[n_tokens]``: each word's weight in the query-text alignment
        (Eq. 3), or None without BAM.
    tcsa_spatial: ``[gh, gw]``: mean attention each TCSA patch receives (Eq. 10), or None.
    """

    tokens: list[str]
    pixel_word: list[np.ndarray]
    query: list[np.ndarray | None]
    word_relevance: list[np.ndarray | None]
    tcsa_spatial: np.ndarray | None


@dataclass(frozen=True)
class Prediction:
    """mask: ``bool [H, W]``; probability: ``float32 [H, W]`` at the image's original size."""

    expression: str
    mask: np.ndarray
    probability: np.ndarray
    attention: AttentionMaps | None = None


def check_expression(expression: Any) -> str:
    """A non-empty expression of reasonable length, whitespace-normalised, or ``ValueError``."""
    if not isinstance(expression, str):
        raise ValueError(f"an expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split())
    if not text:
        raise ValueError("the expression is empty: describe the object to segment, e.g. 'the water'")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}")
    return text


def as_rgb8(image: Any, bands: Sequence[int] | None = None) -> np.ndarray:
    """A path, PIL image or numpy array -> ``[H, W, 3] uint8`` (see :mod:`sbanet.image`)."""
    if isinstance(image, (str, Path)):
        image = read_image(image)
    elif hasattr(image, "mode") and hasattr(image, "size"):  # PIL.Image without importing PIL here
        image = np.asarray(image.convert("RGBA") if image.mode == "P" else image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"unsupported image type {type(image).__name__}: pass a path, PIL image or numpy array")
    return to_rgb8(image, bands)


class Predictor:
    """Runs an :class:`SBANet` on numpy images at their original size."""

    def __init__(self, model: SBANet, tokenizer: Any | None = None, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model.config.text_model)
        self._tokenizer_lock = threading.Lock()
        mean = torch.tensor(self.config.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.pixel_std).view(1, 3, 1, 1)
        self._mean, self._std = mean.to(self.device), std.to(self.device)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Predictor:
        from .checkpoint import load_pretrained

        model, tokenizer = load_pretrained(source, device=device, **kwargs)
        return cls(model, tokenizer, device)

    # --- preprocessing -----------------------------------------------------------------------
    def preprocess(self, image: Any, bands: Sequence[int] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> normalised ``[1, 3, S, S]`` (square resize, bilinear) and the original (H, W)."""
        rgb = as_rgb8(image, bands)
        size = self.config.image_size
        x = torch.tensor(rgb, device=self.device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std, rgb.shape[:2]

    def tokenize(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with self._tokenizer_lock:
            ids, mask = tokenize(self.tokenizer, list(expressions), self.config.max_tokens, pad_to_max=False)
        return ids.to(self.device), mask.to(self.device)

    # --- prediction --------------------------------------------------------------------------
    def predict(self, image: Any, expression: str, return_attention: bool = True, **kwargs: Any) -> Prediction:
        """One image, one expression."""
        return self.predict_batch(image, [expression], return_attention=return_attention, **kwargs)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        image: Any,
        expressions: Sequence[str],
        return_attention: bool = True,
        threshold: float = 0.5,
        bands: Sequence[int] | None = None,
    ) -> list[Prediction]:
        """One image, several expressions. The text-independent part of the image encoder
        (stem + stage 1) runs once and is shared by all expressions."""
        if isinstance(expressions, str):
            raise ValueError("expressions must be a list of strings; use predict() for a single one")
        texts = [check_expression(e) for e in expressions]
        if not texts:
            raise ValueError("no expressions given")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        images, (height, width) = self.preprocess(image, bands)
        ids, mask = self.tokenize(texts)
        text = self.model.encode_text(ids, mask)
        prefix = self.model.encode_image_prefix(images).expand(len(texts), -1, -1, -1)
        logits, attention = self.model.forward_from_prefix(
            prefix, text, mask, images.shape[-2:], need_attention=return_attention
        )
        probability = self.model.probability(logits).unsqueeze(1)  # [K, 1, S, S]
        probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
        probability = probability[:, 0].clamp_(0, 1).cpu().numpy().astype(np.float32)
        predictions = []
        for k, expression in enumerate(texts):
            maps = self._attention_maps(attention, k, ids[k], mask[k]) if return_attention else None
            predictions.append(Prediction(expression, probability[k] > threshold, probability[k], maps))
        return predictions

    def _attention_maps(
        self, attention: dict[str, Any], k: int, ids: torch.Tensor, mask: torch.Tensor
    ) -> AttentionMaps:
        n = int(mask.sum())
        with self._tokenizer_lock:
            tokens = self.tokenizer.convert_ids_to_tokens(ids[:n].tolist())

        def numpy(t: torch.Tensor | None) -> np.ndarray | None:
            return None if t is None else t.float().cpu().numpy()

        stages = attention["stages"]
        pixel_word = [numpy(s["pixel_word"][k, ..., :n]) for s in stages]
        query = [numpy(s["query"][k].mean(0)) if "query" in s else None for s in stages]
        relevance = [numpy(s["word_relevance"][k, :n]) if "word_relevance" in s else None for s in stages]
        tcsa = attention["tcsa"]
        spatial = None
        if tcsa is not None:
            gh, gw = (int(v) for v in tcsa["grid"])
            spatial = numpy(tcsa["spatial"][k].mean(0).mean(0).view(gh, gw))
        return AttentionMaps(tokens, pixel_word, query, relevance, spatial)
