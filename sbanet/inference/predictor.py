"""Image + expression(s) -> Prediction(mask, probability, attention), numpy in and out.

One :class:`Predictor` can serve concurrent callers (the app's users): it keeps no per-image
state; the shared mutable objects, the Rust tokenizer and the text-feature cache, are used
under locks.

By default the predictor runs the inference fast path (``fast=True``): the model composed by
:func:`sbanet.inference.fast.optimize_for_inference` (same weights, less work) and a bounded LRU cache of
text-encoder outputs per expression. ``fast=False`` runs the model exactly as given.

``precision`` (:mod:`sbanet.inference.precision`) says what it computes in: ``"fp32"``, ``"bf16"``,
``"fp16"`` (CUDA) or ``"auto"``, the preset's measured policy for the device, whatever CPU it
runs on; :attr:`Predictor.precision` says what was chosen and why, :meth:`Predictor.label`
shows it. Several expressions on one image share the text-independent prefix, then run in
chunks of :func:`sbanet.inference.runtime.expression_chunk` (Swin-B one at a time on CPUs, else one batch).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sbanet.checkpoint import checkpoint_metadata, load_pretrained
from sbanet.image import invalid_pixels, read_image, to_rgb8
from sbanet.inference.confidence import ConfidenceThresholds, Verdict, judge
from sbanet.inference.fast import optimize_for_inference
from sbanet.inference.gsd import ScalePlan, TrainingGSD, plan_scale
from sbanet.inference.lexicon import Lexicon, taught_classes
from sbanet.inference.precision import Precision, resolve_precision, runtime_label
from sbanet.inference.runtime import TextFeatureCache, expression_chunk, weights_signature
from sbanet.modeling.sbanet import SBANet
from sbanet.modeling.text_encoder import load_tokenizer, tokenize
from sbanet.text_rules import check_expression

# the scaled path runs the model at the image's size at the training GSD: padded to a multiple of
# the encoder's stride, and refused beyond this side (a scene: sbanet.geo.tiling tiles it)
SCALED_MULTIPLE = 32
MAX_SCALED_SIDE = 2048


@dataclass(frozen=True)
class AttentionMaps:
    """What the model looked at, for one expression (maps at each stage's own resolution).

    tokens: the expression's word pieces, ``[CLS]`` and ``[SEP]`` included.
    pixel_word: per stage ``[h_i, w_i, n_tokens]``: PWAM's attention of each pixel over the words.
    query: per stage ``[h_i, w_i]``: where the learnable query tokens look (Eq. 1, mean over
        tokens; each token's attention sums to 1), or None without learnable tokens.
    word_relevance: per stage ``[n_tokens]``: each word's weight in the query-text alignment
        (Eq. 3), or None without BAM.
    tcsa_spatial: ``[gh, gw]``: mean attention each TCSA patch receives (Eq. 11), or None.
    """

    tokens: list[str]
    pixel_word: list[np.ndarray]
    query: list[np.ndarray | None]
    word_relevance: list[np.ndarray | None]
    tcsa_spatial: np.ndarray | None


@dataclass(frozen=True)
class Prediction:
    """mask: ``bool [H, W]``; probability: ``float32 [H, W]`` at the image's original size;
    scale: how the image was resampled to the model's training GSD (None: resized to the input
    size, as without a GSD)."""

    expression: str
    mask: np.ndarray
    probability: np.ndarray
    attention: AttentionMaps | None = None
    scale: str | None = None


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
    """Runs an :class:`SBANet` on numpy images at their original size.

    ``fast``: run the inference fast path (see the module docstring); ``self.model`` is then the
    optimised composition, which shares ``model``'s parameters (and state-dict keys).
    ``text_cache_size``: how many expressions' text features the fast path keeps (0: none).
    ``precision``: ``"auto"`` (the preset's measured policy), ``"fp32"``, ``"bf16"`` or
    ``"fp16"`` (CUDA only); see :mod:`sbanet.inference.precision`. Under bf16 / fp16 the text encoder
    stays in fp32, and on the fast path so do the Swin attention softmax and the classifier.
    ``quantize``: also run the Swin encoder's linear layers in int8 (CPU only; about 2x faster
    matrix products, outputs within quantization error: check the masks on your own
    checkpoint, e.g. with ``python -m benchmarks.bench --parts agreement``). With ``bf16`` the int8
    stages compute in fp32 and the rest in bf16.
    ``expression_chunk``: expressions per forward pass after the shared prefix (None: the
    device's rule, :func:`sbanet.inference.runtime.expression_chunk`).
    ``thresholds``: the cut-offs of :meth:`judge` (``from_pretrained``: the checkpoint's own).
    ``lexicon``: the words the model reads (None: the tokenizer's vocabulary,
    :meth:`sbanet.inference.lexicon.Lexicon.for_model`; ``from_pretrained`` adds the checkpoint's taught
    classes).
    ``training_gsd``: the scale the model learned (:mod:`sbanet.inference.gsd`; ``from_pretrained``:
    the checkpoint's metadata, None for checkpoints that record none); with it, ``predict(...,
    gsd=m)`` resamples the image to that scale.
    """

    def __init__(
        self,
        model: SBANet,
        tokenizer: Any | None = None,
        device: str | torch.device | None = None,
        *,
        fast: bool = True,
        text_cache_size: int = 256,
        precision: str = "auto",
        quantize: bool = False,
        expression_chunk: int | None = None,
        thresholds: ConfidenceThresholds | None = None,
        lexicon: Lexicon | None = None,
        training_gsd: TrainingGSD | None = None,
    ) -> None:
        self.training_gsd = training_gsd
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if quantize and (not fast or self.device.type != "cpu"):
            raise ValueError("quantize=True needs the fast path (fast=True) on a CPU device")
        if expression_chunk is not None and expression_chunk < 1:
            raise ValueError(f"expression_chunk must be >= 1 (or None for the device's rule), got {expression_chunk}")
        self.precision: Precision = resolve_precision(precision, self.device, model.config.name)
        self.expression_chunk = expression_chunk
        # what judge() calls "nothing found" / "low confidence": from_pretrained reads the thresholds
        # calibrated for the checkpoint (its metadata), else sbanet.inference.confidence's defaults
        self.thresholds = thresholds or ConfidenceThresholds()
        model = model.to(self.device).eval()
        self.fast = fast
        self.quantize = quantize
        self.model = optimize_for_inference(model, quantize) if fast else model
        self.config = model.config
        self.text_cache = TextFeatureCache(text_cache_size if fast else 0)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model.config.text_model, plain=True)
        # expressions with no word the model can read are refused, not answered (sbanet.inference.lexicon)
        self.lexicon = lexicon if lexicon is not None else Lexicon.for_model(self.tokenizer)
        self._tokenizer_lock = threading.Lock()
        mean = torch.tensor(self.config.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.pixel_std).view(1, 3, 1, 1)
        self._mean, self._std = mean.to(self.device), std.to(self.device)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        device: str | torch.device = "cpu",
        *,
        allow_pickle: bool = False,
        revision: str | None = None,
        **options: Any,
    ) -> Predictor:
        """Load a checkpoint (:func:`sbanet.checkpoint.load_pretrained`: ``allow_pickle``,
        ``revision``) and wrap it; ``options`` are the constructor's (``fast``, ``precision``,
        ``quantize``, ``text_cache_size``, ``expression_chunk``, ``thresholds``: by default those
        calibrated for a local checkpoint, in its metadata)."""

        # plain: the same model built without transformers or timm (sbanet.build.build_model)
        model, tokenizer = load_pretrained(
            source, device=device, allow_pickle=allow_pickle, revision=revision, plain=True
        )
        metadata = checkpoint_metadata(source)
        if "thresholds" not in options:
            options["thresholds"] = ConfidenceThresholds.from_metadata(metadata)
        # the "not understood" refusal suggests what this checkpoint was taught (sbanet.inference.lexicon)
        if "lexicon" not in options:
            options["lexicon"] = Lexicon.for_model(tokenizer, taught_classes(metadata))
        if "training_gsd" not in options:  # None for checkpoints without a "gsd" block: no resampling
            options["training_gsd"] = TrainingGSD.from_metadata(metadata)
        return cls(model, tokenizer, device, **options)

    def judge(self, prediction: Prediction) -> Verdict:
        """What to tell the user about ``prediction``: "found", "low confidence" or "nothing found"
        (with the reason), by :func:`sbanet.inference.confidence.judge` with this predictor's thresholds; a
        "nothing found" mask is better not used (the app does not queue it)."""
        return judge(prediction, self.thresholds)

    # --- preprocessing -----------------------------------------------------------------------
    def preprocess(self, image: Any, bands: Sequence[int] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> normalised ``[1, 3, S, S]`` (square resize, bilinear) and the original (H, W)."""
        rgb = as_rgb8(image, bands)
        size = self.config.image_size
        x = torch.tensor(rgb, device=self.device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std, rgb.shape[:2]

    def scale_plan(self, size: tuple[int, int], gsd: Any) -> ScalePlan:
        """How an image of ``size`` (H, W) at ``gsd`` metres per pixel (one number or (rows,
        columns)) is resampled to the training scale; ``ValueError`` for a bad GSD or a model that
        records none, or when the image would exceed :data:`MAX_SCALED_SIDE` pixels."""
        if self.training_gsd is None:
            raise ValueError("this model records no training GSD, so it cannot resample to it: leave the GSD out")
        plan = plan_scale(size, gsd, self.training_gsd)
        if max(plan.resampled) > MAX_SCALED_SIDE:
            raise ValueError(
                f"at the model's scale this image is {plan.resampled[0]}x{plan.resampled[1]} pixels (over "
                f"{MAX_SCALED_SIDE}): segment it as a scene (python -m sbanet.predict tiles it)"
            )
        return plan

    def preprocess_scaled(
        self, image: Any, plan: ScalePlan, bands: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> normalised ``[1, 3, H', W']`` at the plan's scale (antialiased bilinear), edge-padded
        on the bottom and right to multiples of 32; returns the unpadded ``(H', W')``."""
        rgb = as_rgb8(image, bands)
        height, width = plan.resampled
        x = torch.tensor(rgb, device=self.device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        pad_h, pad_w = -height % SCALED_MULTIPLE, -width % SCALED_MULTIPLE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return (x - self._mean) / self._std, (height, width)

    def check_expression(self, expression: Any) -> str:
        """:func:`check_expression`, and :class:`~sbanet.inference.lexicon.NotUnderstoodError` when the
        model knows no word of it (another language, emoji only)."""
        text = check_expression(expression)
        return self.lexicon.check(text) if self.lexicon is not None else text

    def tokenize(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Expressions -> ``input_ids, attention_mask [K, L]`` (padded to the longest)."""
        with self._tokenizer_lock:
            ids, mask = tokenize(self.tokenizer, list(expressions), self.config.max_tokens, pad_to_max=False)
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode_texts(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expressions -> ``input_ids, attention_mask [K, L]`` and text features ``F_L [K, L, D]``.

        Features come from the text-feature cache where it holds them (padded positions are
        zero then; the model masks them either way); only the missing expressions are encoded.
        """
        ids, mask = self.tokenize(expressions)
        if self.text_cache.capacity == 0:
            return ids, mask, self.model.encode_text(ids, mask)
        signature = weights_signature(self.model.text_encoder)
        lengths = mask.sum(dim=1).tolist()
        features = [self.text_cache.get(text, signature) for text in expressions]
        todo = [k for k, f in enumerate(features) if f is None]
        if todo:
            longest = max(lengths[k] for k in todo)
            encoded = self.model.encode_text(ids[todo, :longest], mask[todo, :longest])
            for row, k in enumerate(todo):
                features[k] = encoded[row, : lengths[k]].clone()
                self.text_cache.put(expressions[k], signature, features[k])
        text = features[0].new_zeros(len(features), ids.shape[1], features[0].shape[-1])
        for k, f in enumerate(features):
            text[k, : f.shape[0]] = f
        return ids, mask, text

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the image and fusion work, None for plain fp32."""
        return self.precision.dtype

    def label(self, name: str) -> str:
        """What runs, for people: ``"sbanet-lite-landcover · cpu · fp32"``."""
        return runtime_label(name, self.device, self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the image and fusion stages run in: the resolved precision's autocast, or none for fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

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
        gsd: Any = None,
    ) -> list[Prediction]:
        """One image, several expressions. The text-independent part of the image encoder
        (stem + stage 1) runs once and is shared by all expressions; the rest runs in chunks of
        ``expression_chunk`` expressions (see the class).

        ``gsd``: the image's metres per pixel (one number or (rows, columns)): the image is
        resampled so that a model pixel covers the training GSD (:meth:`scale_plan`) and run at
        that size instead of the square input size; masks come back at the original size. None:
        the square resize, as always."""
        if isinstance(expressions, str):
            raise ValueError("expressions must be a list of strings; use predict() for a single one")
        texts = [self.check_expression(e) for e in expressions]
        if not texts:
            raise ValueError("no expressions given")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        plan = None
        if gsd is not None:
            rgb = as_rgb8(image, bands)
            plan = self.scale_plan(rgb.shape[:2], gsd)
            images, valid_size = self.preprocess_scaled(rgb, plan)
            height, width = plan.size
        else:
            images, (height, width) = self.preprocess(image, bands)
            valid_size = images.shape[-2:]
        ids, mask, text = self.encode_texts(texts)
        chunk = self.expression_chunk or expression_chunk(self.device, self.config.name, len(texts))
        probabilities, attentions = [], []
        with self.autocast():
            prefix = self.model.encode_image_prefix(images)
        for start in range(0, len(texts), chunk):
            rows = slice(start, start + chunk)
            length = int(mask[rows].sum(dim=1).max())  # the chunk's longest expression
            with self.autocast():
                logits, attention = self.model.forward_from_prefix(
                    prefix.expand(mask[rows].shape[0], -1, -1, -1),
                    text[rows, :length],
                    mask[rows, :length],
                    images.shape[-2:],
                    need_attention=return_attention,
                )
            probability = self.model.probability(logits).unsqueeze(1)  # [k, 1, S, S] (or the scaled size)
            probability = probability[..., : valid_size[0], : valid_size[1]]  # the scaled path's padding off
            probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
            probabilities.append(probability[:, 0].clamp_(0, 1).cpu().numpy().astype(np.float32))
            attentions += [(attention, k) for k in range(mask[rows].shape[0])]
        probability = np.concatenate(probabilities)
        invalid = invalid_pixels(image, bands)  # NaN / inf pixels are nodata: never part of a mask
        if invalid is not None:
            probability[:, invalid] = 0.0
        predictions = []
        for k, expression in enumerate(texts):
            maps = self._attention_maps(*attentions[k], ids[k], mask[k]) if return_attention else None
            scale = plan.describe() if plan is not None else None
            predictions.append(Prediction(expression, probability[k] > threshold, probability[k], maps, scale))
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
