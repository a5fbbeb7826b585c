"""The human-in-the-loop fine-tune job: trains on accepted masks, measures on held-out ones,
registers the new model; progress, cancellation, crash recovery; never touches the annotators'
masks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from training_fixtures import toy_samples, toy_store

from annotate import make_store
from annotate.jobs import finetune_record
from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, recover, run_finetune
from annotate.store import repository as repo
from annotate.store import runs
from annotate.store.models import MaskVersion, StatusEvent
from annotate.store.transfer import import_samples
from sbanet import sbanet_tiny
from sbanet.checkpoint import checkpoint_metadata, save_pretrained
from sbanet.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, tokenizer):
    import torch

    torch.manual_seed(0)
    model = sbanet_tiny(image_size=32, max_tokens=8)
    return save_pretrained(model, tmp_path_factory.mktemp("base"), tokenizer=tokenizer)


@pytest.fixture
def store(tmp_path, base_checkpoint):
    """8 train and 4 val toy samples imported as accepted masks, and the base model registered."""
    with toy_store(tmp_path, base_checkpoint, train_images=4) as store:
        yield store


def _masks_snapshot(store) -> tuple:
    with store.ReadSession() as session:
        versions = session.execute(
            select(MaskVersion.id, MaskVersion.expression_id, MaskVersion.rle, MaskVersion.status, MaskVersion.author)
        ).all()
        return sorted(versions), session.scalar(select(func.count()).select_from(StatusEvent))


def test_finetune_trains_measures_and_registers_a_new_version(store):
    with store.Session.begin() as session:  # an annotator's correction replaces an imported mask
        first = repo.newest_versions(session, status="accepted", split="train")[0]
        mask = repo.mask_array(first)
        mask[:4] = True
        fix = repo.add_mask_version(session, first.expression_id, mask, kind="correction", author="ana",
                                    parent_id=first.id, status="accepted")  # fmt: skip
    before = _masks_snapshot(store)
    events = []
    # the budget: 3 passes over 8 corrections (no replay: the toy base names no training data)
    config = FinetuneConfig(passes=3, min_steps=1, batch_size=4, checkpoint_every=2)
    run_id = queue_finetune(store, 1, config, author="ana")
    outcome = run_finetune(store, run_id, callback=events.append)

    assert outcome.status == "succeeded" and outcome.model_version_id is not None
    assert outcome.metrics_before["count"] == outcome.metrics_after["count"] == 4
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert next(e.stage for e in events if e.stage != events[0].stage) == "training"
    assert {"evaluating base", "training", "evaluating", "saving", "done"} <= {e.stage for e in events}
    assert max(e.step or 0 for e in events) == 6
    with store.ReadSession() as session:
        run = runs.get_run(session, run_id)
        assert (run.status, run.progress, run.result_model_id) == ("succeeded", 1.0, outcome.model_version_id)
        assert run.metrics_before == outcome.metrics_before and run.finished_at is not None
        assert "held-out mIoU" in run.log and "step 6/6" in run.log
        plan = run.config["plan"]  # what the run chose, and how it went
        assert plan["steps"] == 6 and plan["budget"].startswith("6 steps: 3 passes over 8 corrections + 0 replay")
        assert plan["replay"].startswith("no replay: the base checkpoint's metadata names no training data")
        assert [c["step"] for c in plan["checks"]] == [2, 4, 6] and plan["kept_step"] in (2, 4, 6)
        assert plan["replay"] in run.log and plan["budget"] in run.log
        trained = [m.id for m in runs.run_masks(session, run_id, "train")]
        held_out = runs.run_masks(session, run_id, "eval")
        assert fix.id in trained and first.id not in trained and len(trained) == 8
        assert len(held_out) == 4 and {m.expression.split for m in held_out} == {"val"}
        model = runs.get_model_version(session, outcome.model_version_id)
        assert model.parent_id == 1 and model.metrics == outcome.metrics_after and model.made_by.id == run_id
        assert not Path(model.checkpoint).is_absolute()  # inside the data folder: it can move
        source = runs.checkpoint_source(store.files, model)
    assert not (store.data_dir / "finetune" / f"run-{run_id}").exists()  # resume state cleaned up
    assert checkpoint_metadata(source)["finetune"] == {"config": config.to_dict(), "plan": plan}
    predictor = Predictor.from_pretrained(source)
    assert predictor.predict(np.zeros((32, 32, 3), np.uint8), "the red square").mask.shape == (32, 32)
    assert _masks_snapshot(store) == before  # the job never writes an annotator's mask


def test_cancel_from_the_app_and_from_another_process(store, monkeypatch):
    before = _masks_snapshot(store)
    stop = threading.Event()
    replay = {"replay_kind": "synthetic", "replay_options": {"n_images": 1, "size": 64}, "replay_ratio": 0.5}
    run_id = queue_finetune(store, 1, FinetuneConfig(steps=40, batch_size=4, **replay), author="ana")
    outcome = run_finetune(store, run_id, cancel=stop, callback=lambda p: p.step == 2 and stop.set())
    assert outcome.status == "cancelled" and outcome.model_version_id is None

    monkeypatch.setattr(finetune_record, "CANCEL_POLL_S", 0.0)

    def cancel_in_database(progress):
        if progress.step == 1:
            with store.Session.begin() as session:  # what `python -m train.finetune --cancel` does
                runs.request_cancel(session, second)

    second = queue_finetune(store, 1, FinetuneConfig(steps=40, batch_size=4), author="ana")
    assert run_finetune(store, second, callback=cancel_in_database).status == "cancelled"
    with store.ReadSession() as session:
        for rid, step in ((run_id, 2), (second, 1)):
            run = runs.get_run(session, rid)
            assert run.status == "cancelled" and f"cancelled at step {step}" in run.log
        assert "8 accepted masks + 4 replay samples; 4 held out" in runs.get_run(session, run_id).log
        assert len(runs.list_model_versions(session)) == 1
    assert _masks_snapshot(store) == before


@pytest.mark.parametrize(
    ("split", "message"), [("train", "no accepted masks of held-out"), ("val", "no accepted masks of train-split")]
)
def test_missing_data_fails_the_run_with_the_reason(tmp_path, base_checkpoint, split, message):
    with make_store(f"sqlite:///{tmp_path / 's.sqlite'}", tmp_path / "d") as store:
        import_samples(store, toy_samples(2, split=split))
        with store.Session.begin() as session:
            runs.add_model_version(session, name="tiny", checkpoint=str(base_checkpoint), preset="sbanet_tiny")
        run_id = queue_finetune(store, 1, FinetuneConfig(steps=2), author="ana")
        with pytest.raises(ValueError, match=message):
            run_finetune(store, run_id)
        with store.ReadSession() as session:
            run = runs.get_run(session, run_id)
            assert run.status == "failed" and message in run.error


@pytest.mark.slow
def test_a_killed_worker_is_requeued_and_resumes_from_its_checkpoint(store):
    before = _masks_snapshot(store)
    run_id = queue_finetune(store, 1, FinetuneConfig(steps=24, batch_size=4, checkpoint_every=2), author="ana")
    command = [sys.executable, "-m", "train.finetune", "--store", store.url, "--data-dir", str(store.data_dir),
               "--resume", str(run_id)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = store.data_dir / "finetune" / f"run-{run_id}" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.is_file():  # killed once it has saved a resume point, in the middle of training
        assert worker.poll() is None, worker.stderr.read().decode()
        assert time.monotonic() < deadline, "the worker never reached its first checkpoint"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    worker.stderr.close()

    with store.ReadSession() as session:
        assert runs.get_run(session, run_id).status == "running"  # stale: its worker is gone
    with pytest.raises(ValueError, match="only a queued run can start"):
        run_finetune(store, run_id)
    assert recover(store) == [run_id]  # what the app and the CLI do at start
    outcome = run_finetune(store, run_id)
    assert outcome.status == "succeeded"
    with store.ReadSession() as session:
        run = runs.get_run(session, run_id)
        assert run.attempts == 2 and "requeued" in run.log and "resuming from last.pt" in run.log
        assert run.log.count("evaluating base on") == 1  # the base metrics of attempt 1 were kept
    assert _masks_snapshot(store) == before


def test_cli_registers_a_checkpoint_as_base_lists_and_cancels(store, base_checkpoint, capsys):
    from train.finetune import main

    base = ["--store", store.url, "--data-dir", str(store.data_dir)]
    assert main([*base, "--base", str(base_checkpoint), "--steps", "2", "--batch-size", "4"]) == 0
    assert '"status": "succeeded"' in capsys.readouterr().out
    queued = queue_finetune(store, 1, FinetuneConfig(steps=2), author="ana")
    assert main([*base, "--cancel", str(queued)]) == 0
    assert f"run {queued}: cancelled" in capsys.readouterr().out
    assert main([*base, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "succeeded 100% (succeeded) model 2 -> 3" in listing and f"run {queued}: cancelled" in listing
    with store.ReadSession() as session:
        assert runs.get_model_version(session, 2).preset == "sbanet_tiny"
    assert main([*base, "--base", "99"]) == 2
    assert "unknown model version id 99" in capsys.readouterr().err


def test_replay_draws_a_seeded_share_of_the_original_training_data():
    from annotate.jobs.finetune_data import plan_run, planned_replay

    config = FinetuneConfig(replay_kind="synthetic", replay_options={"n_images": 2, "size": 64}, seed=3)
    plan, drawn = plan_run(config, 5, {})
    assert len(drawn) == plan["replay"]["samples"] == 10 and {s.split for s in drawn} == {"train"}  # 2 per correction
    assert [s.sample_id for s in drawn] == [s.sample_id for s in planned_replay(config, plan)]
    assert plan_run(FinetuneConfig(replay_kind=None), 5, {})[1] == []
    assert len(plan_run(FinetuneConfig(**{**config.to_dict(), "replay_ratio": 1e4}), 5, {})[1]) < 50_000
    # a floor for few corrections: 2 per correction would be 10; replay switched off stays off
    floor = FinetuneConfig(**{**config.to_dict(), "min_replay": 16})
    assert [plan_run(floor, n, {})[0]["replay"]["samples"] for n in (5, 10)] == [16, 20]
    assert plan_run(FinetuneConfig(**{**floor.to_dict(), "replay_ratio": 0}), 5, {})[1] == []
    with pytest.raises(ValueError, match="min_replay must be >= 0"):
        FinetuneConfig(min_replay=-1)
    with pytest.raises(ValueError, match="needs replay_root"):
        FinetuneConfig(replay_kind="rrsisd")
    with pytest.raises(ValueError, match="held-out splits"):
        FinetuneConfig(eval_splits=("train",))
    with pytest.raises(ValueError, match="unknown fine-tune config fields"):
        FinetuneConfig.from_dict({"stepz": 3})


def test_the_budget_grows_with_the_corrections_within_its_floor_and_cap():
    from annotate.jobs.finetune_data import budget

    config = FinetuneConfig(passes=6, batch_size=4, min_steps=30, max_steps=150)
    steps = [budget(config, n, n)[0] for n in (1, 5, 10, 30, 100)]  # replay as many as corrections
    assert steps == [30, 30, 30, 90, 150]
    assert (
        budget(config, 30, 30)[1]
        == "90 steps: 6 passes over 30 corrections + 30 replay samples at batch 4 = 90, kept within [30, 150]"
    )
    assert budget(FinetuneConfig(steps=7), 30, 30) == (7, "7 steps (set)")
    with pytest.raises(ValueError, match="max_steps"):
        FinetuneConfig(min_steps=50, max_steps=10)
    with pytest.raises(ValueError, match="passes"):
        FinetuneConfig(passes=0)


def test_replay_defaults_to_the_base_recipe_and_says_why_when_it_is_absent(tmp_path):
    from annotate.jobs.finetune_data import plan_run, replay_sources

    mix = [{"kind": "folder", "root": "runs/data/whole"}, {"kind": "synthetic"}]
    recipe = {"recipe": {"data": {"kind": "folder", "root": "runs/data/crops", "mix": mix}}}
    (tmp_path / "runs" / "data" / "whole").mkdir(parents=True)
    config = FinetuneConfig(replay_root=str(tmp_path))
    sources, note = replay_sources(config, recipe)
    assert sources == [{"kind": "folder", "root": str(tmp_path / "runs/data/whole"), "options": {}}] and note is None
    plan, replay = plan_run(config, 10, recipe)  # the folder is there but holds no conversion
    assert replay == [] and plan["replay"].startswith("no replay: the base's training data could not be read")
    plan, _ = plan_run(FinetuneConfig(), 10, recipe)  # relative to the working directory: not here
    assert plan["replay"].startswith("no replay: the base's training data is not here (runs/data/crops")
    assert plan["steps"] == 30  # the floor: 6 passes over 10 corrections at batch 4 is 15
    assert replay_sources(FinetuneConfig(replay_ratio=0), recipe)[1].startswith("no replay: switched off")


def test_the_fine_tune_tab_says_plainly_when_the_new_version_is_not_better():
    from annotate.app.manage import comparison, plan_summary

    def status(before, after):
        return {"metrics_before": {"mIoU": before}, "metrics_after": {"mIoU": after}, "held_out": 12}

    assert "**worse than its base** (held-out mIoU 0.300 vs the base's 0.400, on 12 of your masks)" in comparison(
        status(0.4, 0.3)
    )
    assert "**not better than its base**" in comparison(status(0.4, 0.402))
    assert comparison(status(0.4, 0.5)).startswith("It is better than its base (held-out mIoU 0.500")
    assert "not measured" in comparison({"metrics_before": None, "metrics_after": None})
    plan = {
        "budget": "90 steps: ...",
        "replay": {"samples": 30},
        "steps_run": 60,
        "stopped_early": True,
        "kept_step": 30,
    }
    assert plan_summary(plan) == (
        "Budget: 90 steps: ... · 30 replay samples of the base's training data · "
        "stopped early at step 60, kept the weights of step 30"
    )
    no_replay = plan_summary({"budget": "30 steps", "replay": "no replay: /data is not here"})
    assert no_replay.startswith("Budget: 30 steps · no replay") and no_replay.endswith("data is not here")


def test_cli_defaults_are_the_budget_and_every_choice_can_be_overridden():
    from train.finetune import _parser, config_from_args

    default = config_from_args(_parser().parse_args(["--base", "1"]))
    assert default == FinetuneConfig()
    assert (default.steps, default.replay_kind, default.early_stop, default.freeze_batchnorm) == (
        None,
        "auto",
        True,
        True,
    )
    flags = ["--base", "1", "--steps", "50", "--no-replay", "--no-early-stop", "--train-batchnorm", "--passes", "3",
             "--min-steps", "5", "--max-steps", "60", "--patience", "4", "--checkpoint-every", "10",
             "--min-replay", "12"]  # fmt: skip
    config = config_from_args(_parser().parse_args(flags))
    assert config.min_replay == 12
    assert (config.steps, config.replay_kind, config.early_stop, config.freeze_batchnorm) == (50, None, False, False)
    assert (config.passes, config.min_steps, config.max_steps, config.patience, config.checkpoint_every) == (
        3.0, 5, 60, 4, 10
    )  # fmt: skip
