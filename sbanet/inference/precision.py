"""Which floating-point precision a model runs in, for inference and for training alike.

One word (``precision``), one table (:data:`DTYPES`), one environment variable
(:data:`PRECISION_ENV`, ``SBANET_PRECISION``: the default of the app, ``python -m sbanet.predict``,
the scene runner and the training and evaluation commands). ``precision`` is one of
:data:`PRECISIONS`:

* ``"fp32"``: everything in float32 (the reference every other precision is compared with);
* ``"bf16"``: bf16 autocast on CPU or CUDA. Native on CUDA and on CPUs with AVX512-BF16 / AMX;
  elsewhere PyTorch emulates it (correct, but several times slower than fp32: use it there only
  to test);
* ``"fp16"``: fp16 autocast, CUDA only (CPU kernels for it are missing or emulated);
* ``"auto"``: what :data:`AUTO_POLICY` says for the model's preset on the device's type
  (training runs fp32 for it: the policy is measured on inference).

Training takes the same names (:func:`training_precision`; ``"none"``, the name older run
configs used for fp32, still reads as fp32) and runs under :func:`autocast`.

``auto`` never depends silently on the CPU it lands on: a preset gets reduced precision on a
device type only where the benchmark measured it both at least :data:`MIN_SPEEDUP` x faster
than fp32 *and* in agreement with fp32 (mask IoU at least :data:`MIN_IOU` on real images).
Each entry carries the evidence in words (``docs/benchmarks.md``: the tables and commands).

Under reduced precision the fast path keeps the numerically sensitive parts in fp32
(:data:`FP32_PARTS`), measured per component with ``python -m benchmarks.bench --parts precision``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import MappingProxyType

import torch

from sbanet.inference import runtime

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
LEGACY_FP32 = "none"  # what run configs written before the one name called fp32 (``train.amp: none``)
PRECISION_ENV = "SBANET_PRECISION"
MIN_SPEEDUP = 1.3  # reduced precision must be at least this much faster than fp32 ...
MIN_IOU = 0.99  # ... and its masks at least this close to fp32's (min IoU over real image/expression pairs)
DTYPES = MappingProxyType({"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16})

# The parts kept in fp32 when the rest runs in bf16 / fp16: the text encoder (cached per
# expression, so its cost hardly counts), the Swin window-attention logits and softmax (as
# CUDA autocast does for every softmax), and the classifier with the final upsampling of its
# logits (the 0.5 threshold reads their difference). They cost under 1 % of a forward. The
# per-component measurement (docs/benchmarks.md) finds the disagreement elsewhere: for the
# shipped model, bf16 in its EfficientNet encoder alone drops the mask IoU to 0.925, in the
# fusion modules to 0.974, in TCSA to 0.980, in the text encoder or the decoder only to 0.998.
FP32_PARTS = ("text encoder", "window attention softmax", "classifier + upsampling")

_NOT_MEASURED_CUDA = (
    "fp32: reduced precision not yet measured on a GPU for this preset (benchmarks/gpu_bench.sh measures it)"
)
# (preset, device type) -> (what auto runs, why). Anything not listed runs fp32.
AUTO_POLICY: MappingProxyType[tuple[str, str], tuple[str, str]] = MappingProxyType(
    {
        ("sbanet_lite", "cpu"): (
            "fp32",
            "fp32: bf16 measured no faster on a Xeon with AMX (0.109 s vs 0.117 s per expression) or on an "
            "AVX-512 BF16 EPYC (0.117 s both), and its masks disagree with fp32 (v4: mask IoU min 0.79 on tile 6)",
        ),
        ("sbanet_swin_b", "cpu"): (
            "fp32",
            "fp32: bf16 measured 1.7x faster on a Xeon with AMX, but agreement on real images "
            "needs trained weights, which are not available offline",
        ),
        ("sbanet_tiny", "cpu"): ("fp32", "fp32: a test preset, never measured in reduced precision"),
        ("sbanet_lite", "cuda"): (
            "fp32",
            "fp32: bf16's masks disagree with fp32 (v4: mask IoU min 0.783 on tile 6; bf16 rounds the same on a GPU)",
        ),
        ("sbanet_swin_b", "cuda"): ("fp32", _NOT_MEASURED_CUDA),
    }
)


@dataclass(frozen=True)
class Precision:
    """What inference runs in: ``name`` (fp32 / bf16 / fp16), what was ``requested`` and why."""

    name: str
    requested: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"


def check_precision(precision: str) -> str:
    """``precision`` lower-cased, or ``ValueError`` naming the choices."""
    text = str(precision).strip().lower()
    if text not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return text


def precision_from_env(default: str = "auto") -> str:
    """:data:`PRECISION_ENV` when set (checked), else ``default``: every entry point's default."""
    value = os.environ.get(PRECISION_ENV, "").strip()
    if not value:
        return default
    try:
        return check_precision(value)
    except ValueError as exc:
        raise ValueError(f"${PRECISION_ENV}: {exc}") from exc


def training_precision(precision: str) -> str:
    """The precision training and evaluation run in for ``precision``: fp32, bf16 or fp16
    (``"auto"`` and the older name ``"none"`` read as fp32), or ``ValueError`` naming the choices."""
    text = str(precision).strip().lower()
    if text == LEGACY_FP32:
        return "fp32"
    text = check_precision(text)
    return "fp32" if text == "auto" else text


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of a training or evaluation step: ``precision``'s dtype
    (:data:`DTYPES`) on the device's type, or autocast switched off for fp32."""
    name = training_precision(precision)
    return torch.autocast(device.type, dtype=DTYPES[name] or torch.bfloat16, enabled=name != "fp32")


def resolve_precision(precision: str, device: str | torch.device, preset: str) -> Precision:
    """The precision ``preset`` runs in on ``device`` when ``precision`` is asked for.

    ``ValueError`` for an unknown name, fp16 off CUDA, and bf16 on a GPU without bf16.
    """
    requested = check_precision(precision)
    device = torch.device(device)
    if requested == "auto":
        name, reason = AUTO_POLICY.get(
            (preset, device.type), ("fp32", f"fp32: no reduced-precision policy for {preset}")
        )
        return Precision(name, requested, reason)
    if requested == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 runs on CUDA only; on {device.type} choose fp32 or bf16")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16: this GPU has no bf16 support; choose fp16 or fp32")
    if requested == "bf16" and device.type == "cpu" and not runtime.cpu_supports_bf16():
        return Precision("bf16", requested, "bf16 as asked (emulated on this CPU: slower than fp32)")
    return Precision(requested, requested, f"{requested} as asked")


def runtime_label(name: str, device: str | torch.device, precision: Precision) -> str:
    """What runs, for people: ``"sbanet-lite-landcover · cpu · fp32"``."""
    return f"{name} · {torch.device(device).type} · {precision.name}"
