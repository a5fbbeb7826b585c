"""SBANet (Fig. 2): composes injected parts, like segment-anything's ``Sam``.

``images [B, 3, H, W]`` + ``input_ids / attention_mask [B, L]`` -> 2-class logits ``[B, 2, H, W]``.

Flow: text encoder -> ``F_L``; for each stage ``i``: the backbone stage's blocks -> ``F_Vi``;
BAM updates the language (``F'_Li``) and fuses it into the visual features, whose gated sum
feeds stage ``i + 1``; the fused features (LayerNorm-ed) go through TCSA to the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SBANetConfig
from .bam import BidirectionalAlignmentModule


class SBANet(nn.Module):
    def __init__(
        self,
        config: SBANetConfig,
        visual_encoder: nn.Module,
        text_encoder: nn.Module,
        fusions: nn.ModuleList,
        tcsa: nn.Module | None,
        decoder: nn.Module,
        correction: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        self.fusions = fusions
        # LAVT normalises each stage's fused features before the decoder.
        self.stage_norms = nn.ModuleList(nn.LayerNorm(c) for c in config.stage_dims)
        self.tcsa = tcsa
        self.decoder = decoder
        # a project's quick adaptation (sbanet.modeling.correction_head), None in trained models
        self.correction = correction
        self.register_buffer("class_weights", torch.tensor(config.class_weights), persistent=False)

    # --- the three phases, separable so several expressions can share the image work ------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids and mask -> ``F_L [B, L, D]``."""
        return self.text_encoder(input_ids, attention_mask)

    def encode_image_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The text-independent part: stem + stage 1's blocks. ``[B, 3, H, W] -> [B, H/4, W/4, C_1]``."""
        return self.visual_encoder.stage(0, self.visual_encoder.stem(images))

    def forward_from_prefix(
        self,
        prefix: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        output_size: tuple[int, int],
        need_attention: bool = False,
    ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """prefix ``[B, H/4, W/4, C_1]``, text ``[B, L, D]``, text_mask ``[B, L]`` -> logits
        ``[B, 2, *output_size]`` and, if asked, the attention maps (see :meth:`forward`)."""
        features, attention = self.decoder_inputs(prefix, text, text_mask, need_attention)
        logits = self.decoder(features)
        if self.correction is not None:
            # the image stages run again only for the rows whose expression a head recognises
            logits = self.correction(logits, text, text_mask, lambda rows: self.visual_pyramid(prefix[rows]))
        logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=True)
        return logits, attention

    def visual_pyramid(self, prefix: torch.Tensor) -> list[torch.Tensor]:
        """The image encoder's own stages, without the language: prefix ``[B, H/4, W/4, C_1]`` ->
        ``[B, C_i, H/2^(i+2), W/2^(i+2)]`` (strides 4..32), what correction heads read."""
        x, pyramid = prefix, [prefix]
        for i in range(1, len(self.fusions)):
            x = self.visual_encoder.stage(i, x)
            pyramid.append(x)
        return [p.permute(0, 3, 1, 2) for p in pyramid]

    def decoder_inputs(
        self, prefix: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_attention: bool = False
    ) -> tuple[list[torch.Tensor], dict[str, Any] | None]:
        """Everything before the decoder: the four fused (and TCSA-refined) stage maps
        ``[B, C_i, H/2^(i+1), W/2^(i+1)]`` (strides 4..32) and, if asked, the attention maps. Quick
        adaptation (:mod:`sbanet.training.adapt`) caches them and trains only the decoder."""
        x = prefix
        features, stage_attention = [], []
        for i, fusion in enumerate(self.fusions):
            if i > 0:
                x = self.visual_encoder.stage(i, x)
            out = fusion(x, text, text_mask, need_attention)
            x, text = out.next_input, out.text
            features.append(self.stage_norms[i](out.fused))
            stage_attention.append(out.attention)
        tcsa_attention = None
        if self.tcsa is not None:
            features, tcsa_attention = self.tcsa(features, text, text_mask, need_attention)
        features = [f.permute(0, 3, 1, 2) for f in features]
        if not need_attention:
            return features, None
        return features, {"stages": stage_attention, "tcsa": tcsa_attention}

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        """images ``[B, 3, H, W]`` (normalised), input_ids / attention_mask ``[B, L]``.

        Returns logits ``[B, 2, H, W]``; with ``return_attention`` also a dict:

        * ``stages``: per stage a dict with ``pixel_word [B, h, w, L]`` (PWAM, finest DFS branch),
          and with BAM ``query [B, M, h, w]`` (Eq. 1, learnable tokens only),
          ``alignment [B, L, M]`` (Eq. 2's softmax) and ``word_relevance [B, L]``;
        * ``tcsa``: ``spatial [B, n_h, m, m]`` (Eq. 11) and ``grid`` (gh, gw), or None.
        """
        text = self.encode_text(input_ids, attention_mask)
        prefix = self.encode_image_prefix(images)
        logits, attention = self.forward_from_prefix(prefix, text, attention_mask, images.shape[-2:], return_attention)
        return (logits, attention) if return_attention else logits

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LAVT's weighted 2-class cross-entropy, plus ``dice_weight`` x soft Dice when set.

        logits ``[B, 2, H, W]``, target ``[B, H, W]`` in {0, 1}; ``class_weights`` ``[2]``
        replaces the model's own (background, foreground) weights.
        """
        weights = self.class_weights if class_weights is None else class_weights
        loss = F.cross_entropy(logits, target.long(), weight=weights.to(logits.dtype))
        if self.config.dice_weight > 0:
            loss = loss + self.config.dice_weight * soft_dice_loss(logits, target)
        return loss

    @staticmethod
    def probability(logits: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``[B, H, W]`` (argmax of the logits == probability > 0.5)."""
        return torch.softmax(logits.float(), dim=1)[:, 1]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``1 - Dice(p, y)``, p the foreground probability of ``[B, 2, H, W]``
    logits and y the ``[B, H, W]`` target; ``smooth`` keeps empty targets finite (an empty
    prediction for an empty target scores 0 loss)."""
    probability = SBANet.probability(logits).flatten(1)
    truth = target.float().flatten(1)
    overlap = (probability * truth).sum(1)
    dice = (2 * overlap + smooth) / (probability.sum(1) + truth.sum(1) + smooth)
    return (1 - dice).mean()


def build_fusions(config: SBANetConfig) -> nn.ModuleList:
    """One BAM (or LAVT PWAM) per stage. The last stage has no gate: its gated sum would feed a
    fifth stage that does not exist (LAVT computes and discards it)."""
    return nn.ModuleList(BidirectionalAlignmentModule(config, stage, has_gate=stage < 3) for stage in range(4))
