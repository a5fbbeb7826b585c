"""What a run leaves behind besides checkpoints: a tqdm bar, ``steps.csv`` (every ``log_every``
optimiser steps), ``epochs.csv`` (training loss and val metrics per epoch), TensorBoard scalars
under ``tensorboard/`` and PNG plots (``loss.png``, ``val_metrics.png``). Used as the engine's
progress callback on rank 0; a resumed run appends to the same files.

The two CSV files mean the same by the same names (see :data:`STEP_COLUMNS`,
:data:`EPOCH_COLUMNS`): ``epoch`` is 1-based in both, ``lr`` is the learning rate the (last)
optimiser step *used*, and every loss is averaged over all processes' micro-batches.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from sbanet.training.engine import Progress

STEP_COLUMNS = {
    "step": "optimiser steps done (1-based: the step this row reports)",
    "epoch": "the epoch the step belongs to (1-based, as in epochs.csv)",
    "loss": "the step's training loss, averaged over processes and micro-batches",
    "lr": "the learning rate this step used (non-encoder groups; encoders: x encoder_lr_mult)",
    "grad_norm": "global gradient L2 norm before clipping (empty without train.grad_clip)",
    "samples_per_s": "global samples per second (all processes), mean of the last 50 steps",
    "eta_s": "estimated seconds to the end of the schedule",
    "memory_gb": "peak CUDA memory allocated on rank 0 so far, GiB (empty on CPU)",
}
EPOCH_COLUMNS = {
    "epoch": "epochs completed (1-based: the epoch this row reports)",
    "step": "optimiser steps done at the end of the epoch",
    "train_loss": "mean of the epoch's step losses (each averaged over processes)",
    "lr": "the learning rate the epoch's last step used (as steps.csv)",
    "val_<metric>": "val Pr@0.5 ... Pr@0.9, oIoU, mIoU as fractions in [0, 1] (empty when not validated)",
}
STEP_FIELDS = tuple(STEP_COLUMNS)
PLOTTED_METRICS = ("oIoU", "mIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9")


def append_csv(path: Path, row: dict[str, Any], fields: list[str] | tuple[str, ...]) -> None:
    """Append ``row`` to ``path``, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_csv(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def _line_plot(path: Path, series: list[tuple[list[float], list[float], str, str]], **axes: Any) -> Path:
    """One PNG of ``(x, y, style, label)`` lines (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for x, y, style, label in series:
        ax.plot(x, y, style, label=label, lw=0.9)
    ax.set(**axes)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(directory: Path) -> list[Path]:
    """``loss.png`` (step loss and epoch mean) and ``val_metrics.png`` from the run's CSV files."""
    steps, epochs = read_csv(directory / "steps.csv"), read_csv(directory / "epochs.csv")
    written = []
    if steps or epochs:
        series = [([r["step"] for r in steps], [r["loss"] for r in steps], "-", "step")] if steps else []
        if epochs:
            series.append(([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", "epoch mean"))
        labels = dict(xlabel="optimiser step", ylabel="training loss (weighted CE)", title=directory.name)
        written.append(_line_plot(directory / "loss.png", series, **labels))
    validated = [r for r in epochs if not math.isnan(r.get("val_oIoU", math.nan))]
    if validated:
        epoch_axis = [r["epoch"] for r in validated]
        series = [(epoch_axis, [100 * r[f"val_{m}"] for r in validated], "o-", m) for m in PLOTTED_METRICS]
        labels = dict(xlabel="epoch", ylabel="val metric (%)", title=f"{directory.name}: validation", ylim=(0, 100))
        written.append(_line_plot(directory / "val_metrics.png", series, **labels))
    return written


class RunLogger:
    """The engine's ``callback``: ``RunLogger(run_dir, log_every=10)(progress)``; ``close()`` at the end."""

    def __init__(
        self, directory: str | Path, log_every: int = 10, tensorboard: bool = True, plots: bool = True, bar: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_every, self.plots = max(1, log_every), plots
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.directory / "tensorboard"))
        self.bar_enabled, self.bar = bar, None

    def __call__(self, progress: Progress) -> None:
        if progress.event == "step":
            self._step(progress)
        elif progress.event == "epoch":
            self._epoch(progress)
        elif progress.event == "end":
            self.close()

    def _step(self, p: Progress) -> None:
        if self.bar is None and self.bar_enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=p.total_steps, initial=p.step - 1, unit="step", dynamic_ncols=True)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                epoch=p.epoch + 1, loss=f"{p.loss:.4f}", lr=f"{p.lr:.2e}", sps=f"{p.samples_per_s:.1f}"
            )
        if p.step % self.log_every and p.step != p.total_steps:
            return
        row = {"step": p.step, "epoch": p.epoch + 1, "loss": p.loss, "lr": p.lr, "grad_norm": p.grad_norm}
        row.update(samples_per_s=p.samples_per_s, eta_s=p.eta_s, memory_gb=p.memory_gb)
        append_csv(self.directory / "steps.csv", row, STEP_FIELDS)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", p.loss, p.step)
            self.writer.add_scalar("train/lr", p.lr, p.step)
            self.writer.add_scalar("train/samples_per_s", p.samples_per_s, p.step)
            if p.grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", p.grad_norm, p.step)

    def _epoch(self, p: Progress) -> None:
        scalars = {k: v for k, v in (p.metrics or {}).items() if isinstance(v, (int, float)) and k != "count"}
        row = {"epoch": p.epoch + 1, "step": p.step, "train_loss": p.loss, "lr": p.lr}
        row.update({f"val_{k}": v for k, v in scalars.items()})
        fields = [
            "epoch",
            "step",
            "train_loss",
            "lr",
            *(f"val_{k}" for k in PLOTTED_METRICS),
            "val_Pr@0.6",
            "val_Pr@0.8",
        ]
        append_csv(self.directory / "epochs.csv", row, fields)
        if self.writer is not None:
            self.writer.add_scalar("epoch/train_loss", p.loss, p.step)
            for name, value in scalars.items():
                self.writer.add_scalar(f"val/{name}", value, p.step)
            self.writer.flush()
        text = f"epoch {p.epoch + 1}/{p.epochs}  step {p.step}  train loss {p.loss:.4f}"
        if scalars:
            text += "  val " + "  ".join(f"{k} {100 * v:.2f}" for k, v in scalars.items()) + (" *" if p.is_best else "")
        (self.bar.write if self.bar is not None else print)(text)
        if self.plots:
            plot_run(self.directory)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
