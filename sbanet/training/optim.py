"""The paper's optimiser and schedule: AdamW with decoupled weight decay on weight matrices only,
and a per-iteration polynomial decay (power 0.9) with an optional linear warm-up.

Which tensors are decayed (decided here, applied by :func:`param_groups`):

* **decayed**: every weight matrix / convolution kernel (``ndim >= 2``), word embeddings excepted;
* **not decayed**: tensors with fewer than 2 dims (norm scales and shifts, biases, the per-channel
  scales of TCSA's depthwise 1x1 convolutions), the position tables (Swin's
  ``relative_position_bias_table`` / ``absolute_pos_embed``, BERT's ``position_embeddings`` and
  ``token_type_embeddings``), every ``nn.Embedding`` (word embeddings: decay would shrink the rows of
  words absent from the data toward 0 with no gradient to balance it), and BAM's learnable query
  tokens and their position embeddings (``query_tokens.tokens``, ``query_tokens.pos_embed``), which
  are embedding tables too. LAVT decays neither norms nor Swin's position tables; it does decay
  biases, and leaves BERT's embeddings and its last two layers out of the optimiser altogether.

That is the default scope, ``"paper"``: the paper says only "AdamW with a weight decay of 0.01"
(sbanet-paper.txt line 167). ``scope="lavt"`` is LAVT's ``train.py`` instead, read onto this
model's modules:

* the decoder (LAVT's ``classifier``): every parameter decayed, biases and BatchNorm included;
* the text encoder: only its transformer layers 0-9 train (``encoder.layer[i] for i in range(10)``
  in LAVT: BERT-base's embeddings, last two layers and pooler never change), all decayed; a text
  encoder without transformer layers (the LSTM of Table VI) is refused;
* everything else (LAVT's ``backbone``: the visual encoder and the fusion; here also BAM's tokens
  and TCSA, which LAVT lacks): not decayed when ``"norm"`` is in the name or it is one of the
  position / embedding tables above, decayed otherwise (biases included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Parameters whose name ends with one of these are position/embedding tables: never decayed.
NO_DECAY_SUFFIXES = (
    "relative_position_bias_table",
    "absolute_pos_embed",
    "position_embeddings.weight",
    "token_type_embeddings.weight",
    "query_tokens.tokens",
    "query_tokens.pos_embed",
)
ENCODER_PREFIXES = ("visual_encoder.", "text_encoder.")
OPTIMIZER_SCOPES = ("paper", "lavt")
LAVT_TEXT_LAYERS = 10  # LAVT's train.py: BERT's encoder.layer[i] for i in range(10)
TEXT_LAYER = re.compile(r"^text_encoder\.[^.]+\.encoder\.layers?\.(\d+)\.")  # BERT's and CLIP's


def is_decayed(name: str, param: torch.Tensor, embedding_names: set[str]) -> bool:
    """Whether AdamW's weight decay applies to this parameter (see the module docstring)."""
    return param.ndim >= 2 and name not in embedding_names and not name.endswith(NO_DECAY_SUFFIXES)


def lavt_decision(name: str, embedding_names: set[str]) -> bool | None:
    """LAVT's ``train.py`` for one parameter: ``None`` when it is left out of the optimiser, else
    whether it is decayed (see the module docstring)."""
    if name.startswith("text_encoder."):
        layer = TEXT_LAYER.match(name)
        return True if layer and int(layer.group(1)) < LAVT_TEXT_LAYERS else None
    if name.startswith("decoder."):
        return True
    return "norm" not in name and name not in embedding_names and not name.endswith(NO_DECAY_SUFFIXES)


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, encoder_lr_mult: float = 1.0, scope: str = "paper"
) -> list[dict[str, Any]]:
    """AdamW parameter groups, each named (``"decay"``, ``"no_decay"``, and with an encoder lr
    multiplier other than 1 also ``"encoder_decay"``, ``"encoder_no_decay"``); ``scope`` is one of
    :data:`OPTIMIZER_SCOPES` (the module docstring says what each decays and trains).

    Frozen parameters (``requires_grad=False``) are left out. Empty groups are dropped.
    """
    if scope not in OPTIMIZER_SCOPES:
        raise ValueError(f"optimizer scope must be one of {OPTIMIZER_SCOPES}, got {scope!r}")
    embedding_names = {
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Embedding)
    }
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    text_trains = any(n.startswith("text_encoder.") for n, _ in trainable)
    if scope == "lavt" and text_trains and not any(TEXT_LAYER.match(n) for n, _ in trainable):
        raise ValueError(
            "optimizer scope 'lavt' trains BERT's transformer layers 0-9 (LAVT's train.py); this text "
            "encoder has no transformer layers: use scope 'paper' or freeze the text encoder"
        )
    groups: dict[str, dict[str, Any]] = {}
    for name, param in trainable:
        if scope == "lavt":
            decision = lavt_decision(name, embedding_names)
            if decision is None:
                continue
            decayed = decision
        else:
            decayed = is_decayed(name, param, embedding_names)
        encoder = encoder_lr_mult != 1.0 and name.startswith(ENCODER_PREFIXES)
        key = ("encoder_" if encoder else "") + ("decay" if decayed else "no_decay")
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": lr * (encoder_lr_mult if encoder else 1.0),
            },
        )
        group["params"].append((name, param))  # named: the optimiser keeps "param_names"
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    encoder_lr_mult: float = 1.0,
    fused: bool | None = None,
    scope: str = "paper",
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (betas and eps are PyTorch's defaults, as in LAVT)."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0 or encoder_lr_mult < 0:
        raise ValueError("weight_decay and encoder_lr_mult must be >= 0")
    groups = param_groups(model, weight_decay, lr, encoder_lr_mult, scope)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)


@dataclass
class PolySchedule:
    """LR factor at optimiser step ``s`` (0-based) of ``total`` steps, for ``LambdaLR``:

    ``(1 - s / total) ** power``, times ``(s + 1) / warmup`` during the first ``warmup`` steps
    (LAVT: ``(1 - x / (len(loader) * epochs)) ** 0.9`` stepped per iteration, no warm-up).
    A plain dataclass so the scheduler's ``state_dict`` captures it.
    """

    total: int
    power: float = 0.9
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.total < 1 or self.warmup < 0 or self.power < 0:
            raise ValueError(f"bad schedule: total={self.total}, warmup={self.warmup}, power={self.power}")

    def __call__(self, step: int) -> float:
        factor = max(0.0, 1.0 - step / self.total) ** self.power
        if step < self.warmup:
            factor *= (step + 1) / self.warmup
        return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration polynomial decay: call ``scheduler.step()`` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PolySchedule(total_steps, power, warmup_steps))
