"""Quick adaptation: decoder-only training on cached frozen features (sbanet.training.adapt) and
the fine-tune job's quick mode (held-out check, activate only if better, cancel)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training_fixtures import single_thread, tiny32_dataset, toy_samples, toy_store

from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, run_finetune
from annotate.store import runs
from sbanet import sbanet_tiny
from sbanet.checkpoint import checkpoint_metadata, save_pretrained
from sbanet.data.augment import TRANSFORMS, turn_tensor
from sbanet.inference.predictor import Predictor
from sbanet.training.adapt import AdaptConfig, adapt_decoder, cache_features, evaluate_cached
from sbanet.training.evaluation import evaluate


def test_cached_features_give_the_model_s_own_logits_under_every_flip_and_turn(tiny32, tokenizer):
    dataset = tiny32_dataset(tokenizer, toy_samples(2, seed=3), augment=True)
    with single_thread():
        cache = cache_features(tiny32, dataset, transforms=8, batch_size=5)
        assert len(cache) == len(dataset) * 8 and cache.masks.shape == (len(dataset) * 8, 32, 32)
        for row in (0, 7, 13):  # sample row // 8 under transform row % 8
            i, t = divmod(row, 8)
            item = dataset.base_item(i)
            image = turn_tensor(item["image"], *TRANSFORMS[t])[None]
            with torch.no_grad():
                logits = tiny32(image, dataset.turned_ids[t, i][None], dataset.turned_attention[t, i][None])
                cached = tiny32.decoder([f[row : row + 1] for f in cache.features])
            cached = torch.nn.functional.interpolate(cached, size=(32, 32), mode="bilinear", align_corners=True)
            torch.testing.assert_close(cached, logits, atol=1e-4, rtol=1e-4)
            assert torch.equal(cache.masks[row].long(), turn_tensor(item["mask"], *TRANSFORMS[t]))


def test_cached_evaluation_matches_the_evaluator(tiny32, tokenizer):
    dataset = tiny32_dataset(tokenizer, toy_samples(3, seed=4))
    with single_thread():
        cached = evaluate_cached(tiny32, cache_features(tiny32, dataset))
        direct = evaluate(tiny32, dataset, batch_size=4)
    assert cached["count"] == direct["count"] == 6
    assert cached["mIoU"] == pytest.approx(direct["mIoU"], abs=1e-3)


def test_decoder_training_fits_the_corrections_and_leaves_the_encoders_alone(tokenizer):
    torch.manual_seed(1)
    model = sbanet_tiny(image_size=32, max_tokens=8).eval()
    encoders = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    data = tiny32_dataset(tokenizer, toy_samples(4, seed=5), augment=True)
    with single_thread():
        corrections = cache_features(model, data, transforms=4)
        # a target the decoder can reach from these features (a random encoder's features do not
        # show the toy objects): what another decoder says, thresholded at its median
        teacher = copy.deepcopy(model.decoder)
        torch.manual_seed(7)
        for p in teacher.parameters():
            torch.nn.init.normal_(p, std=0.2)
        with torch.no_grad():
            logits = F.interpolate(teacher(corrections.features), size=(32, 32), mode="bilinear", align_corners=True)
        score = (logits[:, 1] - logits[:, 0]).flatten(1)
        corrections.masks = (score > score.median(1).values[:, None]).reshape(-1, 32, 32).to(torch.uint8)
        before = evaluate_cached(model, corrections)["mIoU"]
        config = AdaptConfig(train="decoder", steps=40, lr=1e-2, batch_size=8, crop=1.0, check_every=10)
        result = adapt_decoder(model, corrections, config, held_out=corrections)
        after = evaluate_cached(model, corrections)["mIoU"]
    assert after > before + 0.2 and result.kept_step > 0
    assert [h["step"] for h in result.history] == [0, 10, 20, 30, 40]
    assert after == pytest.approx(max(h["mIoU"] for h in result.history))  # the best check is kept
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoders.items())
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable


def test_bias_mode_trains_only_the_classifier_bias_and_a_cancel_keeps_the_base(tiny32, tokenizer):
    model = sbanet_tiny(image_size=32, max_tokens=8).eval()
    model.load_state_dict(tiny32.state_dict())
    data = tiny32_dataset(tokenizer, toy_samples(2, seed=6))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    with single_thread():
        cache = cache_features(model, data)
        adapt_decoder(model, cache, AdaptConfig(train="bias", steps=5, lr=0.1, crop=1.0))
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, base[k])}
        assert changed == {"decoder.classifier.bias"}
        model.load_state_dict(base)
        result = adapt_decoder(model, cache, AdaptConfig(steps=5), held_out=cache, cancel=lambda: True)
    assert result.cancelled and result.steps == 0
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "field, value",
    [("train", "encoder"), ("transforms", 9), ("crop", 0.0), ("lr", float("nan")), ("replay_weight", -1.0)],
)
def test_bad_adapt_settings_are_refused_with_the_reason(field, value):
    with pytest.raises(ValueError, match=field):
        AdaptConfig(**{field: value})
    with pytest.raises(ValueError, match="mode"):
        FinetuneConfig(mode="fast")


@pytest.fixture
def store(tmp_path, tiny32, tokenizer):
    base = save_pretrained(tiny32, tmp_path / "base", tokenizer=tokenizer)
    with toy_store(tmp_path, base, train_images=3) as store:
        yield store


def test_quick_mode_caches_trains_the_decoder_checks_and_registers(store):
    events = []
    config = FinetuneConfig(
        mode="quick", quick_train="decoder", quick_steps=12, quick_lr=1e-2, checkpoint_every=4, activate=True
    )
    outcome = run_finetune(store, queue_finetune(store, 1, config, author="ana"), callback=events.append)
    assert outcome.status == "succeeded" and outcome.metrics_before["count"] == 4
    stages = [e.stage for e in events]
    assert stages[0] == "caching" and {"evaluating base", "training", "saving", "done"} <= set(stages)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with store.ReadSession() as session:
        run = runs.get_run(session, outcome.run_id)
        plan = run.config["plan"]
        assert plan["steps"] == 12 and plan["budget"].startswith("quick: 12 decoder steps")
        assert [c["step"] for c in plan["checks"]] == [0, 4, 8, 12]
        new = runs.get_model_version(session, outcome.model_version_id)
        better = outcome.metrics_after["mIoU"] > outcome.metrics_before["mIoU"]
        assert new.parent_id == 1 and bool(new.active) == better  # activated only when better
        assert outcome.metrics_after["mIoU"] >= outcome.metrics_before["mIoU"]  # the base's step 0 is a check
        source = runs.checkpoint_source(store.files, new)
    record = checkpoint_metadata(source)["finetune"]
    assert record["adapt"]["train"] == "decoder" and record["adapt"]["transforms"] == 8
    mask = Predictor.from_pretrained(source).predict(np.zeros((32, 32, 3), np.uint8), "the red square").mask
    assert mask.shape == (32, 32)


def test_a_cancelled_quick_run_registers_nothing(store):
    run_id = queue_finetune(store, 1, FinetuneConfig(mode="quick", quick_steps=50), author="ana")
    outcome = run_finetune(store, run_id, cancel=lambda: True)
    assert outcome.status == "cancelled" and outcome.model_version_id is None
    with store.ReadSession() as session:
        assert runs.get_run(session, run_id).status == "cancelled"
        assert len(runs.list_model_versions(session)) == 1
