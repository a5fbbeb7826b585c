"""Where an SBANet forward spends its time, per box of Fig. 2 (``python -m benchmarks.bench --profile``).

:func:`component_times` hooks the model's top-level modules (text encoder, each stage's fusion
and norm, TCSA, decoder) and attributes the time *between* them to the visual encoder: the gap
before fusion ``i`` is visual stage ``i`` (stage 1 includes the stem). It works the same for the
eager model and the fast path, for any backbone, without changing the model.
:func:`operator_table` is torch.profiler's per-operator view of the same forward.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from sbanet.modeling.sbanet import SBANet


def _hooked_modules(model: SBANet) -> list[tuple[str, torch.nn.Module]]:
    modules = [("text encoder", model.text_encoder)]
    for i, fusion in enumerate(model.fusions):
        modules += [(f"fusion {i + 1}", fusion), (f"stage norm {i + 1}", model.stage_norms[i])]
    if model.tcsa is not None:
        modules.append(("tcsa", model.tcsa))
    modules.append(("decoder", model.decoder))
    return modules


def _attribute(events: list[tuple[str, str, float]], start: float, end: float) -> dict[str, float]:
    """Turn (name, 'start' | 'end', time) events into seconds per component."""
    out: dict[str, float] = {}
    last = start
    for name, kind, t in events:
        if kind == "start":
            gap = f"visual stage {name.split()[1]}" if name.startswith("fusion ") else "other"
            out[gap] = out.get(gap, 0.0) + (t - last)
        else:
            out[name] = out.get(name, 0.0) + (t - last)
        last = t
    out["output upsampling"] = end - last
    return out


@torch.inference_mode()
def component_times(
    model: SBANet,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    repeats: int = 3,
) -> dict[str, float]:
    """Median seconds per component of ``model(images, input_ids, attention_mask)`` over ``repeats``
    runs after one warm-up. images ``[B, 3, H, W]``; ids / mask ``[B, L]``. Keys keep forward order;
    ``total`` is the whole forward, ``other`` what falls between the named components."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    events: list[tuple[str, str, float]] = []
    handles = []
    for name, module in _hooked_modules(model):
        handles.append(
            module.register_forward_pre_hook(lambda *_, n=name: events.append((n, "start", time.perf_counter())))
        )
        handles.append(module.register_forward_hook(lambda *_, n=name: events.append((n, "end", time.perf_counter()))))
    runs: list[dict[str, float]] = []
    try:
        for i in range(repeats + 1):
            events.clear()
            start = time.perf_counter()
            model(images, input_ids, attention_mask)
            end = time.perf_counter()
            if i > 0:  # the first run warms up allocators and caches
                runs.append({**_attribute(events, start, end), "total": end - start})
    finally:
        for handle in handles:
            handle.remove()
    keys = list(runs[0])
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


@torch.inference_mode()
def operator_table(
    model: SBANet,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: int = 15,
) -> list[dict[str, Any]]:
    """The ``rows`` operators with the most self CPU time in one forward (after a warm-up):
    ``[{"op", "calls", "self_s", "share"}]``."""
    from torch.profiler import ProfilerActivity, profile

    model(images, input_ids, attention_mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(images, input_ids, attention_mask)
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total,
        }
        for e in averages[:rows]
    ]
