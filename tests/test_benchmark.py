"""The benchmark's pieces: cases, statistics, targets, the per-component profiler, the training
measurement (the GPU script's code path, on the CPU) and one end-to-end CLI run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import shared_data

from benchmarks.profiling import component_times
from benchmarks.speed import Case, Settings, build_cases, evaluate_targets, markdown_report, run_case
from benchmarks.speed.measure import expression
from benchmarks.speed.suite import real_images, spread


def test_case_validation():
    with pytest.raises(ValueError, match="kind"):
        Case(kind="sprint", preset="sbanet_tiny")
    with pytest.raises(ValueError, match="path"):
        Case(kind="inference", preset="sbanet_tiny", path="turbo")
    with pytest.raises(ValueError, match="dtype"):
        Case(kind="train", preset="sbanet_tiny", dtype="fp8")
    with pytest.raises(ValueError, match="repeats"):
        Case(kind="inference", preset="sbanet_tiny", repeats=0)
    case = Case(kind="train", preset="sbanet_tiny", batch=3)
    assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
    with pytest.raises(ValueError, match="unknown parts"):
        Settings(parts=("speed", "warp"))


@pytest.mark.parametrize("tokens", [3, 10, 20])
def test_expressions_have_the_asked_token_count(tokenizer, tokens):
    texts = {expression(tokens, k) for k in range(4)}
    assert len(texts) == 4  # distinct strings: every expression misses the text cache
    assert {len(tokenizer(t)["input_ids"]) for t in texts} == {tokens}


def test_spread():
    s = spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (3.0, 1.0, 5.0, 5)
    assert s["q1"] == 2.0 and s["q3"] == 4.0 and s["iqr"] == 2.0
    assert spread([7.0])["iqr"] == 0.0


def test_cases_per_part():
    cases = build_cases(Settings(parts=("speed", "multi"), expressions=(1, 2, 8)))
    swin = [c for c in cases if c.preset == "sbanet_swin_b"]
    assert {(c.ablation, c.path) for c in swin if c.expressions == 1 and not c.cached_text} == {
        (a, p) for a in ("lavt", "full") for p in ("eager", "fast", "int8")
    }
    assert sorted((c.expressions, c.chunk) for c in swin if c.expressions > 1) == [(2, 1), (2, 2), (8, 1), (8, 8)]
    shipped = [c for c in cases if c.checkpoint]
    assert {(c.kind, c.expressions, c.chunk) for c in shipped} >= {("inference", 8, 1), ("profile", 8, None)}
    only_shipped = build_cases(Settings(parts=("multi",), expressions=(1, 8), multi_models=("shipped",)))
    assert all(c.checkpoint for c in only_shipped) and len(only_shipped) == 5  # K=1, K=8 x 2 chunks, 2 profiles
    with pytest.raises(ValueError, match="multi models"):
        Settings(multi_models=("sbanet_tiny",))
    train = build_cases(Settings(parts=("train",), train_presets=("sbanet_tiny",), batch=3))
    assert [(c.kind, c.preset, c.batch, c.image_size) for c in train] == [("train", "sbanet_tiny", 3, 224)]
    with pytest.raises(ValueError, match="unknown preset"):
        build_cases(Settings(parts=("train",), train_presets=("nope",)))


def _record(preset, ablation, path, median, k=1, kind="inference", chunk=None):
    case = Case(kind=kind, preset=preset, ablation=ablation, path=path, expressions=k, chunk=chunk).to_dict()
    return {"case": case, "rounds": [{"times": [median]}], "stats": spread([median]), "peak_rss_mb": 100.0}


def test_targets_and_report_from_records():
    records = [
        _record("sbanet_swin_b", "lavt", "eager", 4.0),
        _record("sbanet_swin_b", "full", "eager", 4.4),
        _record("sbanet_swin_b", "full", "fast", 2.0),
        _record("sbanet_swin_b", "full", "fast", 12.0, k=8, chunk=1),
        _record("sbanet_swin_b", "full", "fast", 18.0, k=8, chunk=8),
        _record("sbanet_lite", "full", "fast", 0.12),
    ]
    agreement = Case(kind="agreement", preset="sbanet_swin_b", path="fast").to_dict()
    pairs = [{"iou": 1.0, "iou_median": 0.995, "max_prob_diff": 1e-6, "foreground": 0.0}] * 2
    records.append({"case": agreement, "rounds": [{"pairs": pairs}], "peak_rss_mb": 1.0})
    targets = {t["target"]: t for t in evaluate_targets(records)}
    assert targets["full SBANet / LAVT latency (eager)"]["value"] == pytest.approx(1.1)
    assert targets["full SBANet / LAVT latency (eager)"]["met"]
    reference = targets["full SBANet fast / LAVT reference (eager), fp32"]
    assert reference["value"] == pytest.approx(0.5) and reference["met"]
    speedup = targets["fast speed-up over eager, sbanet_swin_b SBANet"]
    assert speedup["value"] == pytest.approx(2.2) and not speedup["met"]
    assert targets["8 expressions / 1, sbanet_swin_b, one at a time"]["value"] == pytest.approx(6.0)
    batched = targets["8 expressions / 1, sbanet_swin_b, one batch"]
    assert batched["value"] == pytest.approx(9.0) and not batched["met"]  # more than 8 single runs
    assert targets["sbanet_lite latency, fast path (s)"]["met"]
    assert targets["fast vs fp32 min mask IoU, sbanet_swin_b (random weights)"]["met"]
    machine = {"cpu": "X", "cores": 2, "torch": "2", "torch_threads": 2, "cpu_capability": "AVX2"}
    text = markdown_report(records, {**machine, "native_bf16": "False", "python": "3"}, "python -m benchmarks.bench")
    assert "| 2.200 | >= 2.5 | **no** |" in text and "| sbanet_swin_b | SBANet | fast fp32 | 8 (1) | 12.000 |" in text


def test_component_times_cover_the_forward(tiny_model):
    images, ids = torch.randn(1, 3, 64, 64), torch.randint(1000, 2000, (1, 6))
    times = component_times(tiny_model, images, ids, torch.ones(1, 6, dtype=torch.long), repeats=1)
    for key in ("text encoder", "visual stage 1", "fusion 1", "visual stage 4", "fusion 4", "tcsa", "decoder"):
        assert times[key] > 0, key
    parts = sum(v for k, v in times.items() if k != "total")
    assert parts == pytest.approx(times["total"], rel=0.05)


def test_training_measurement_bf16_on_cpu():
    """benchmarks/gpu_bench.sh's code path (autocast bf16, synchronised steps) with tiny settings."""
    case = Case(kind="train", preset="sbanet_tiny", image_size=32, tokens=5, batch=2, repeats=2, warmup=1, dtype="bf16")
    result = run_case(case)
    assert len(result["times"]) == 2 and all(t > 0 for t in result["times"])
    assert all(math.isfinite(loss) for loss in result["losses"]) and result["peak_rss_mb"] > 0
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            run_case(Case(kind="train", preset="sbanet_tiny", image_size=32, device="cuda", repeats=1, warmup=0))


@pytest.mark.parametrize("path", ["eager", "int8"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_measurement(path, precision):
    """Both precisions on every CPU (bf16 is emulated on CPUs without it: slow, hence tiny sizes)."""
    case = Case(
        kind="inference", preset="sbanet_tiny", path=path, precision=precision,
        image_size=64, tokens=6, repeats=2, warmup=0,
    )  # fmt: skip
    result = run_case(case)
    assert len(result["times"]) == 2 and all(t > 0 for t in result["times"])
    assert result["peak_rss_mb"] > 100 and result["precision"] == precision


def test_cuda_inference_cases_and_their_precisions():
    """The GPU script's inference configurations: every case on the device, fp32 / bf16 / fp16,
    no int8 (a CPU kernel); on a machine without CUDA the measurement says so."""
    settings = Settings(
        parts=("speed", "multi"), device="cuda", precisions=("fp32", "bf16", "fp16"), expressions=(1, 8)
    )
    cases = build_cases(settings)
    assert {c.device for c in cases} == {"cuda"} and "int8" not in {c.path for c in cases}
    assert {c.precision for c in cases if c.kind == "inference"} == {"fp32", "bf16", "fp16"}
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        Settings(precisions=("fp16",))
    with pytest.raises(ValueError, match="precisions"):
        Settings(precisions=("fp8",))
    with pytest.raises(ValueError, match="precision"):
        Case(kind="inference", preset="sbanet_tiny", precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            run_case(Case(kind="inference", preset="sbanet_tiny", image_size=32, device="cuda", repeats=1, warmup=0))


def test_components_measurement_in_bf16(tmp_path):
    """Per component in bf16 against fp32 (emulated bf16 on most CPUs: a tiny model and image)."""
    from PIL import Image

    from benchmarks.speed.components import COMPONENTS, components_table

    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    case = Case(kind="components", preset="sbanet_tiny", images=[str(path)], texts=["the car"], precision="bf16")
    result = run_case(case)
    configs = result["configs"]
    assert set(COMPONENTS) | {"whole model, plain autocast", "fast path as shipped (fp32 parts kept)"} == set(configs)
    for summary in configs.values():
        assert summary["pairs"] == 1 and 0.0 <= summary["min_iou"] <= 1.0 and summary["max_prob_diff"] < 0.1
    table = components_table([{"case": case.to_dict(), "rounds": [result]}])
    assert len(table) == 2 + len(configs) and "| sbanet_tiny | TCSA (bf16) | 1 |" in "\n".join(table)
    with pytest.raises(ValueError, match="reduced precision"):
        run_case(Case(kind="components", preset="sbanet_tiny", images=[str(path)], texts=["a"], precision="fp32"))


def test_real_images_for_agreement(tmp_path):
    root = shared_data("dubai-aerial")
    images = real_images(root, 3)
    assert len(images) == 3 and len({p.split("/")[-2] for p in images}) == 3  # one per tile first
    with pytest.raises(ValueError, match="not found"):
        real_images(tmp_path / "missing", 2)


def test_cli_end_to_end(tmp_path, capsys):
    """The whole CLI: one configuration in a child process, markdown on stdout, JSON written."""
    from benchmarks.bench import main

    out = tmp_path / "bench.json"
    args = ["--parts", "train", "--train-presets", "sbanet_tiny", "--train-image-size", "64", "--batch", "2"]
    code = main([*args, "--train-steps", "1", "--train-warmup", "0", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["records"][0]["stats"]["n"] == 1 and result["machine"]["cores"] >= 1
    assert "### Training throughput" in capsys.readouterr().out
    assert main(["--parts", "bogus", "--out", str(out)]) == 2


def test_app_stages_split_a_click_and_restore_what_they_wrapped():
    """benchmarks.app_stages: stage seconds from probe events (epoch seconds) and the page's
    times; closing the probe puts the app's functions back."""
    import gradio as gr

    from annotate.app import inputs
    from benchmarks.app_stages import STAGES, StageProbe, stage_table
    from sbanet.inference.predictor import Predictor

    class Backend:
        def predict(self, *args):
            return "ran"

    backend = Backend()
    originals = (inputs.DecodedUploads.load, Predictor.preprocess, gr.AnnotatedImage.postprocess)
    probe = StageProbe(backend)
    assert backend.predict() == "ran" and probe.events["predict"][0] <= probe.events["predict"][1]
    probe.events = {  # click at 100.0, result shown at 101.5, overlay loaded at 101.6
        "decode": (100.2, 100.3),
        "predict": (100.3, 101.0),
        "preprocess": (100.3, 100.4),
        "overlay": (101.0, 101.1),
        "encode": (101.1, 101.3),
    }
    stages = probe.stages(100.0, 101.5, 101.6)
    expected = [0.2, 0.1, 0.1, 0.6, 0.0, 0.1, 0.2, 0.2, 0.1]
    assert list(stages) == list(STAGES) and stages == pytest.approx(dict(zip(STAGES, expected)))
    assert sum(stages.values()) == pytest.approx(1.6)  # the stages tile the click
    assert stage_table([stages], [1.6])["click to overlay, median"] == 1.6
    probe.reset()
    assert probe.stages(100.0, 101.5, 101.6) is None  # a probe that did not fire: no split
    probe.close()
    assert (inputs.DecodedUploads.load, Predictor.preprocess, gr.AnnotatedImage.postprocess) == originals
    assert "predict" not in vars(backend) and backend.predict() == "ran"  # the instance's wrapper is gone
