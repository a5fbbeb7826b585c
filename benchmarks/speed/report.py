"""The benchmark's markdown tables and its targets, computed from pooled records."""

from __future__ import annotations

from typing import Any

from .components import components_table

Record = dict[str, Any]

LIMITS = {
    "full_vs_lavt": 1.15,
    "fast_vs_lavt_reference": 0.85,  # issue 34: full SBANet's fast path against LAVT as its code runs it
    "fast_speedup": 2.5,
    "iou": 0.99,
    "k8_vs_k1": 8.0,  # K expressions never cost more than K single runs
    "lite_latency_s": 0.15,
}


def find(records: list[Record], **match: Any) -> Record | None:
    """The first record whose case has every ``match`` value (and completed)."""
    for record in records:
        case = record["case"]
        if all(case.get(k) == v for k, v in match.items()) and "error" not in record:
            return record
    return None


def median(records: list[Record], **match: Any) -> float | None:
    defaults = {"cached_text": False, "expressions": 1, "precision": "fp32", "checkpoint": None}
    record = find(records, kind="inference", **{**defaults, **match})
    return record["stats"]["median"] if record and "stats" in record else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


PATH_LABELS = {"eager": "eager fp32", "fast": "fast", "int8": "fast + int8"}


def _agreement(records: list[Record], preset: str, path: str) -> dict[str, float] | None:
    record = find(records, kind="agreement", preset=preset, path=path)
    if record is None:
        return None
    pairs = record["rounds"][-1]["pairs"]
    return {
        "pairs": len(pairs),
        "min_iou": min(p["iou"] for p in pairs),
        "mean_iou": sum(p["iou"] for p in pairs) / len(pairs),
        "min_iou_median": min(p["iou_median"] for p in pairs),
        "max_prob_diff": max(p["max_prob_diff"] for p in pairs),
        "foreground": sum(p["foreground"] for p in pairs) / len(pairs),
        "pretrained": record["case"]["pretrained"],
    }


def evaluate_targets(records: list[Record]) -> list[dict[str, Any]]:
    """Each target the records allow computing: value, limit and whether met."""
    swin = dict(preset="sbanet_swin_b")
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, at_most: bool, note: str = "") -> None:
        if value is not None:
            met = value <= limit if at_most else value >= limit
            rows.append({"target": name, "value": value, "limit": limit, "at_most": at_most, "met": met, "note": note})

    for path in ("eager", "fast"):
        full, lavt = (
            median(records, ablation="full", path=path, **swin),
            median(records, ablation="lavt", path=path, **swin),
        )
        add(f"full SBANet / LAVT latency ({path})", _ratio(full, lavt), LIMITS["full_vs_lavt"], True)
    precisions = sorted({r["case"].get("precision", "fp32") for r in records if r["case"]["kind"] == "inference"})
    for precision in precisions:  # LAVT's reference: its eager forward, in the same precision
        fast = median(records, ablation="full", path="fast", precision=precision, **swin)
        reference = median(records, ablation="lavt", path="eager", precision=precision, **swin)
        name = f"full SBANet fast / LAVT reference (eager), {precision}"
        add(name, _ratio(fast, reference), LIMITS["fast_vs_lavt_reference"], True)
    for path in ("fast", "int8"):
        for ablation in ("full", "lavt"):
            eager, fast = (median(records, ablation=ablation, path=p, **swin) for p in ("eager", path))
            name = "SBANet" if ablation == "full" else "LAVT"
            speedup = _ratio(eager, fast)
            add(
                f"{PATH_LABELS[path]} speed-up over eager, sbanet_swin_b {name}", speedup, LIMITS["fast_speedup"], False
            )
        for preset in ("sbanet_swin_b", "sbanet_lite"):
            agreement = _agreement(records, preset, path)
            if agreement:
                weights = "pretrained encoders" if agreement["pretrained"] else "random weights"
                note = f"{agreement['pairs']} pairs, max abs dp {agreement['max_prob_diff']:.1e}"
                name = f"{PATH_LABELS[path]} vs fp32 min mask IoU, {preset} ({weights})"
                add(name, agreement["min_iou"], LIMITS["iou"], False, note)
    for checkpoint in sorted({r["case"].get("checkpoint") or "" for r in records if r["case"]["kind"] == "inference"}):
        model = dict(checkpoint=checkpoint or None, preset="sbanet_lite" if checkpoint else "sbanet_swin_b")
        label = checkpoint.rstrip("/").rsplit("/", 1)[-1] or "sbanet_swin_b"
        one = median(records, ablation="full", path="fast", **model)
        for chunk, how in ((1, "one at a time"), (8, "one batch")):
            eight = median(records, ablation="full", path="fast", expressions=8, chunk=chunk, **model)
            add(f"8 expressions / 1, {label}, {how}", _ratio(eight, one), LIMITS["k8_vs_k1"], True)
    lite = median(records, preset="sbanet_lite", ablation="full", path="fast", checkpoint=None)
    add("sbanet_lite latency, fast path (s)", lite, LIMITS["lite_latency_s"], True)
    return rows


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def inference_table(records: list[Record]) -> list[str]:
    lines = [
        "| model | ablation | path | K (per pass) | median s | IQR s | min-max s | runs "
        "| peak RSS MiB (process / inference or GPU) | speed-up vs eager |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        c = r["case"]
        if c["kind"] != "inference":
            continue
        path = f"{PATH_LABELS[c['path']].replace(' fp32', '')} {c.get('precision', 'fp32')}"
        path += (", text cached" if c["cached_text"] else "") + ("" if c["device"] == "cpu" else f" ({c['device']})")
        ablation = "LAVT" if c["ablation"] == "lavt" else "SBANet"
        name = _name(c)
        k = f"{c['expressions']}" + (f" ({c['chunk']})" if c.get("chunk") and c["expressions"] > 1 else "")
        if "stats" not in r:
            lines.append(f"| {name} | {ablation} | {path} | {k} | failed: {r.get('error', '?')} |")
            continue
        s = r["stats"]
        eager = median(
            records, preset=c["preset"], ablation=c["ablation"], path="eager", checkpoint=c.get("checkpoint")
        )
        gain = _ratio(eager, s["median"]) if c["expressions"] == 1 else None
        lines.append(
            f"| {name} | {ablation} | {path} | {k} | {s['median']:.3f} | {s['iqr']:.3f} | "
            f"{s['min']:.3f}-{s['max']:.3f} | {s['n']} | {_mb(r.get('peak_rss_mb'))} / "
            f"{_mb(r.get('inference_peak_rss_mb') or r['rounds'][-1].get('peak_gpu_memory_mb'))} | "
            f"{'-' if gain is None else f'{gain:.2f}x'} |"
        )
    return lines


def targets_table(records: list[Record]) -> list[str]:
    lines = ["| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
    for t in evaluate_targets(records):
        limit = f"{'<=' if t['at_most'] else '>='} {t['limit']:g}"
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']}{note} | {t['value']:.3f} | {limit} | {'yes' if t['met'] else '**no**'} |")
    return lines


def agreement_table(records: list[Record]) -> list[str]:
    lines = [
        "| preset | weights | path | pairs | min IoU@0.5 | mean IoU@0.5 | min IoU@median | max abs prob diff "
        "| foreground |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        c = r["case"]
        a = _agreement(records, c["preset"], c["path"]) if c["kind"] == "agreement" else None
        if a:
            weights = "pretrained encoders" if a["pretrained"] else "random"
            lines.append(
                f"| {c['preset']} | {weights} | {PATH_LABELS[c['path']]} | {a['pairs']} | {a['min_iou']:.4f} | "
                f"{a['mean_iou']:.4f} | "
                f"{a['min_iou_median']:.4f} | {a['max_prob_diff']:.2e} | {a['foreground']:.3f} |"
            )
    return lines


def training_table(records: list[Record]) -> list[str]:
    lines = [
        "| preset | device | dtype | batch | image | median step s | IQR s | samples/s | peak RSS MiB | peak GPU MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        c = r["case"]
        if c["kind"] != "train":
            continue
        if "stats" not in r:
            lines.append(f"| {c['preset']} | {c['device']} | {c['dtype']} | {c['batch']} | failed: {r.get('error')} |")
            continue
        s, gpu = r["stats"], r["rounds"][-1].get("peak_gpu_memory_mb")
        device = r["rounds"][-1].get("gpu", c["device"])
        lines.append(
            f"| {c['preset']} | {device} | {c['dtype']} | {c['batch']} | {c['image_size']} | {s['median']:.3f} | "
            f"{s['iqr']:.3f} | {c['batch'] / s['median']:.2f} | {_mb(r.get('peak_rss_mb'))} | {_mb(gpu)} |"
        )
    return lines


def profile_tables(records: list[Record]) -> list[str]:
    profiles = [r for r in records if r["case"]["kind"] == "profile" and "error" not in r]
    if not profiles:
        return []
    names = [
        f"{_name(r['case'])} {r['case']['path']}"
        + (f" batch {r['case']['expressions']}" if r["case"]["expressions"] > 1 else "")
        for r in profiles
    ]
    components: list[str] = []
    for r in profiles:
        components += [k for k in r["rounds"][-1]["components"] if k not in components and k != "total"]
    lines = ["| component | " + " | ".join(f"{n} s (share)" for n in names) + " |"]
    lines.append("| --- |" + " ---: |" * len(names))
    for key in [*components, "total"]:
        cells = []
        for r in profiles:
            comp = r["rounds"][-1]["components"]
            value, total = comp.get(key, 0.0), comp["total"]
            cells.append(f"{value:.3f} ({100 * value / total:.0f}%)")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for name, r in zip(names, profiles):
        lines += ["", f"Top operators, {name} (self CPU time):", "", "| operator | calls | self s | share |"]
        lines.append("| --- | ---: | ---: | ---: |")
        for op in r["rounds"][-1]["operators"][:10]:
            lines.append(f"| `{op['op']}` | {op['calls']} | {op['self_s']:.3f} | {100 * op['share']:.1f}% |")
    return lines


def _name(case: dict[str, Any]) -> str:
    return case["checkpoint"].rstrip("/").rsplit("/", 1)[-1] if case.get("checkpoint") else case["preset"]


def markdown_report(records: list[Record], machine: dict[str, Any], command: str) -> str:
    """The whole report: machine, command, then one section per measured part."""
    out = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads, {machine['cpu_capability']}, native bf16: {machine['native_bf16']}), "
        f"Python {machine['python']}",
        "",
        f"Command: `{command}`",
    ]
    sections = [
        ("Targets", targets_table(records)),
        ("Inference latency (predict_batch, one image, K expressions)", inference_table(records)),
        ("Agreement of the fast path with fp32 eager (real images)", agreement_table(records)),
        ("Training throughput (forward + backward + AdamW step)", training_table(records)),
        ("Reduced precision per component, against fp32 (real images)", components_table(records)),
        ("Where the time goes (one forward)", profile_tables(records)),
    ]
    for title, lines in sections:
        if len(lines) > 2:
            out += ["", f"### {title}", "", *lines]
    return "\n".join(out) + "\n"
