"""``python -m train.fit`` and ``python -m train.evaluate`` end to end on a few synthetic scenes
(in-process, tiny preset at 64x64), plus the config file / override rules."""

from __future__ import annotations

import json

import pytest
import yaml
from training_fixtures import single_thread

from sbanet.inference.predictor import Predictor
from sbanet.training.train_state import load_training_checkpoint
from train import evaluate as evaluate_cli
from train import fit as fit_cli
from train.data import make_dataset
from train.fit_config import load_config, split_cli_overrides

SYNTHETIC = [
    "model.preset=sbanet_tiny",
    "model.pretrained=false",
    "model.overrides={image_size: 64, max_tokens: 12}",
    "data.kind=synthetic",
    "data.options={n_images: 1, size: 64, seed: 0}",
    "data.val_options={}",
    "data.limit_train=8",
    "data.limit_val=4",
    "train.batch_size=4",
    "train.epochs=1",
    "output.log_every=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    with single_thread():
        assert fit_cli.main(["--config", "configs/synthetic_tiny.yaml", *SYNTHETIC, f"--output.dir={out}"]) == 0
    return out


def test_fit_writes_a_complete_run(run_dir):
    for name in ("config.yaml", "last.pt", "best.pt", "steps.csv", "epochs.csv", "loss.png", "val_metrics.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["preset"] == "sbanet_tiny" and resolved["train"]["batch_size"] == 4
    assert resolved["train"]["lr"] == 5e-4 and resolved["output"]["tensorboard"]  # from the YAML / defaults
    state = load_training_checkpoint(run_dir / "last.pt")
    assert state["run_config"] == resolved and state["step"] == 2
    assert len((run_dir / "steps.csv").read_text().splitlines()) == 3  # header + 2 steps
    predictor = Predictor.from_pretrained(run_dir / "best")
    assert predictor.config.image_size == 64


def test_fit_resume_continues_the_run(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert fit_cli.main(["--resume", str(copy), "train.epochs=2", f"output.dir={copy}"]) == 0
    state = load_training_checkpoint(copy / "last.pt")
    assert (state["epoch"], state["step"]) == (2, 4)
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert len((copy / "epochs.csv").read_text().splitlines()) == 3
    # the schedule follows the resumed config: 4 steps now, so steps 3-4 still learn
    rows = (copy / "steps.csv").read_text().splitlines()[1:]
    lrs = {int(r.split(",")[0]): float(r.split(",")[3]) for r in rows}
    assert lrs[3] == pytest.approx(5e-4 * (1 - 2 / 4) ** 0.9) and lrs[4] > 0


def test_fit_resume_with_another_batch_is_refused_unless_allowed(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert fit_cli.main(["--resume", str(copy), "train.batch_size=2", f"output.dir={copy}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the checkpoint was trained with a global batch of 4") and "\n" not in err
    assert "--allow-batch-change" in err
    # allowed: 2 steps of 4 samples become 4 of 2; 2 epochs of 4 steps end at step 8
    args = ["--resume", str(copy), "--allow-batch-change", "train.batch_size=2", "train.epochs=2"]
    assert fit_cli.main([*args, f"output.dir={copy}"]) == 0
    state = load_training_checkpoint(copy / "last.pt")
    assert (state["epoch"], state["step"]) == (2, 8) and len(state["batch_changes"]) == 1


def test_a_staged_recipe_trains_its_first_stage_once(tmp_path, capsys):
    """``model.init_recipe``: one command trains the stage before (when its run has no best/ yet),
    then this one from its weights; a second time the first stage is reused, and a first-stage run
    trained with another config is refused instead of built on."""
    first = load_config("configs/synthetic_tiny.yaml", [*SYNTHETIC, f"output.dir={tmp_path / 'one'}"]).to_dict()
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(first))
    second = [*SYNTHETIC, f"model.init_recipe={tmp_path / 'one.yaml'}", "train.lr=1e-4"]
    assert fit_cli.main(["--config", "configs/synthetic_tiny.yaml", *second, f"output.dir={tmp_path / 'two'}"]) == 0
    assert f"first the stage before this one: {tmp_path / 'one.yaml'}" in capsys.readouterr().out
    resolved = yaml.safe_load((tmp_path / "two" / "config.yaml").read_text())
    assert resolved["model"]["init"] == str(tmp_path / "one" / "best")
    assert load_training_checkpoint(tmp_path / "one" / "last.pt")["step"] == 2
    stage_one = (tmp_path / "one" / "best" / "model.safetensors").stat().st_mtime_ns

    assert fit_cli.main(["--config", "configs/synthetic_tiny.yaml", *second, f"output.dir={tmp_path / 'three'}"]) == 0
    assert "first the stage" not in capsys.readouterr().out
    assert (tmp_path / "one" / "best" / "model.safetensors").stat().st_mtime_ns == stage_one

    (tmp_path / "one.yaml").write_text(yaml.safe_dump({**first, "train": {**first["train"], "lr": 1e-3}}))
    assert fit_cli.main(["--config", "configs/synthetic_tiny.yaml", *second, f"output.dir={tmp_path / 'four'}"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'one'} was trained with another config than {tmp_path / 'one.yaml'}" in err
    clash = [*second, "model.init=elsewhere", f"output.dir={tmp_path / 'five'}"]
    assert fit_cli.main(["--config", "configs/synthetic_tiny.yaml", *clash]) == 2
    assert "disagree: keep one" in capsys.readouterr().err


def test_a_batch_larger_than_the_split_is_a_one_line_error(tmp_path, capsys):
    args = ["--config", "configs/synthetic_tiny.yaml", *SYNTHETIC, "train.batch_size=12", f"output.dir={tmp_path}"]
    assert fit_cli.main(args) == 2  # 8 training samples, batch 12: no step at all
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 8 training samples make no optimiser step of batch 12") and "\n" not in err


def test_evaluate_prints_the_paper_columns_and_writes_json(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(run_dir / "best"), "--dataset", "synthetic", "--split", "test"]
    args += ["--option", "n_images=1", "--option", "size=64", "--limit", "6", "--json", str(out)]
    assert evaluate_cli.main([*args, "--save-overlays", str(tmp_path / "overlays"), "--num-overlays", "2"]) == 0
    printed = capsys.readouterr().out
    for column in ("Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "oIoU", "mIoU", "mIoU per category"):
        assert column in printed
    report = json.loads(out.read_text())
    assert report["metrics"]["count"] == 6 and len(report["per_sample"]) == 6
    ious = [s["iou"] for s in report["per_sample"]]
    assert report["metrics"]["mIoU"] == pytest.approx(sum(ious) / 6)
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "overlays").iterdir()) == ["best"] * 2 + ["worst"] * 2
    # trainer pickles only with --allow-pickle; then the same numbers
    pickle_args = [*args[:1], str(run_dir / "best.pt"), *args[2:-1], str(tmp_path / "pt.json")]
    assert evaluate_cli.main(pickle_args) == 2
    assert "--allow-pickle" in capsys.readouterr().err  # the flag, as the user types it
    precise_bn = ["--recalibrate-bn", "1", "--batch-size", "4"]
    assert evaluate_cli.main([*pickle_args, "--allow-pickle", "--original-resolution", *precise_bn]) == 0
    report = json.loads((tmp_path / "pt.json").read_text())
    assert report["metrics"]["count"] == 6 and report["recalibrate_bn"] == {"batches": 1, "split": "train"}


def test_overrides_and_config_errors(tmp_path):
    assert split_cli_overrides(["--train.lr", "1e-4", "--model.preset=sbanet_lite", "data.root=/x"]) == [
        "train.lr=1e-4",
        "model.preset=sbanet_lite",
        "data.root=/x",
    ]
    config = load_config("configs/rrsisd_swin_b.yaml", ["train.lr=1e-4", "model.overrides.num_queries=[8,8,8,8]"])
    assert config.train.lr == 1e-4 and config.model.overrides["num_queries"] == [8, 8, 8, 8]
    assert config.train.batch_size == 12 and config.train.epochs == 40 and config.model.preset == "sbanet_swin_b"
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="must not be 'test'"):
        load_config(None, ["data.val_split=test"])
    with pytest.raises(ValueError, match="preset"):
        load_config(None, ["model.preset=resnet"])
    with pytest.raises(ValueError, match=r"section\.key=value"):
        split_cli_overrides(["oops"])
    assert fit_cli.main(["train.lr=1"]) == 2  # no --config


def test_blind_text_dataset(tokenizer):
    config = load_config("configs/synthetic_tiny.yaml").model
    from sbanet.build import PRESET_CONFIGS

    model_config = PRESET_CONFIGS[config.preset](image_size=64)
    normal = make_dataset("synthetic", None, "val", model_config, tokenizer, {"n_images": 1, "size": 64}, limit=3)
    blind = make_dataset("synthetic", None, "val", model_config, tokenizer, {"n_images": 1, "size": 64}, True, 3)
    assert all(s.expression for s in normal.samples) and all(s.expression == "" for s in blind.samples)
    assert blind.attention_mask.sum(1).tolist() == [2, 2, 2]  # [CLS] [SEP]
    assert (blind[0]["mask"] == normal[0]["mask"]).all()
