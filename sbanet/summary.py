"""``python -m sbanet.summary [--preset] NAME``: parameters per component and FLOPs at 448x448.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs)
on one image and one 20-token expression; weights are random (the counts do not depend on them).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch import nn

from .build import ABLATIONS, PRESET_CONFIGS, build_model, count_parameters
from .config import EARLIER_FORMS, SBANetConfig


def component_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of each box of Fig. 2 (the fusion split into PWAM/DFS, BAM tokens, alignment, gates)."""
    parts: dict[str, int] = {
        "visual_encoder": count_parameters(model.visual_encoder),
        "text_encoder": count_parameters(model.text_encoder),
    }
    fusion_parts = {"pwam": 0, "dfs": 0, "query_tokens": 0, "query_text_alignment": 0, "language_gate": 0}
    for fusion in model.fusions:
        fusion_parts["pwam"] += count_parameters(fusion.pwam)
        fusion_parts["dfs"] += count_parameters(fusion.dfs)
        fusion_parts["query_tokens"] += count_parameters(fusion.query_tokens)
        fusion_parts["query_text_alignment"] += count_parameters(fusion.alignment)
        fusion_parts["language_gate"] += count_parameters(fusion.gate)
    parts.update(fusion_parts)
    parts["stage_norms"] = count_parameters(model.stage_norms)
    parts["tcsa"] = count_parameters(model.tcsa)
    parts["decoder"] = count_parameters(model.decoder)
    parts["total"] = count_parameters(model)
    return parts


def count_flops(model: nn.Module, image_size: int = 448, tokens: int = 20) -> dict[str, float]:
    """Forward GFLOPs in total and per top-level module (one image, one expression)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    images = torch.randn(1, 3, image_size, image_size)
    ids = torch.randint(1000, 2000, (1, tokens))
    mask = torch.ones(1, tokens, dtype=torch.long)
    counter = FlopCounterMode(display=False, depth=16)
    with counter:  # grad mode on: the counter's module tracker needs autograd graphs
        model(images, ids, mask)
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    out = {"total": counter.get_total_flops() / 1e9}
    for name in ("visual_encoder", "text_encoder", "fusions", "tcsa", "decoder"):
        prefix = f"{type(model).__name__}.{name}"
        keys = [k for k in per_module if k == prefix or k.startswith(prefix + ".")]
        # modules called directly (not through a parent's forward): keep only the outermost
        outermost = [k for k in keys if not any(k.startswith(o + ".") for o in keys if o != k)]
        out[name] = sum(per_module[k] for k in outermost) / 1e9
    return out


def summarize(config: SBANetConfig, image_size: int = 448, flops: bool = True) -> dict[str, Any]:
    model = build_model(config, pretrained=False)
    result: dict[str, Any] = {"preset": config.name, "parameters": component_parameters(model)}
    if flops:
        result["gflops"] = count_flops(model, image_size)
        result["image_size"] = image_size
    return result


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"{result['preset']}", f"{'component':<24}{'parameters':>14}"]
    for name, n in result["parameters"].items():
        lines.append(f"{name:<24}{n:>14,}")
    if "gflops" in result:
        lines.append(f"\nFLOPs at {result['image_size']}x{result['image_size']}, 20 tokens (GFLOPs)")
        for name, g in result["gflops"].items():
            lines.append(f"{name:<24}{g:>14.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=sorted(PRESET_CONFIGS), help="the preset (or --preset)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESET_CONFIGS))
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), help="apply one of the paper's ablation variants")
    parser.add_argument(
        "--legacy", action="store_true", help="the forms checkpoints of format version 1 compute (sbanet.config)"
    )
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--no-flops", action="store_true", help="parameters only (fast)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    changes = {**(ABLATIONS[args.ablation] if args.ablation else {}), **(EARLIER_FORMS if args.legacy else {})}
    config = PRESET_CONFIGS[args.preset or args.name or "sbanet_swin_b"](**changes)
    result = summarize(config, args.image_size, flops=not args.no_flops)
    print(json.dumps(result, indent=2) if args.json else format_summary(result))


if __name__ == "__main__":
    main()
