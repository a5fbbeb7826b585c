"""Quick adaptation of the late layers: the last image stage, its fusion, TCSA and the decoder
train on maps cached before them (``level="late"``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training_fixtures import single_thread, tiny32_dataset, toy_samples, toy_store

from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, run_finetune
from sbanet import sbanet_tiny
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.data.augment import TRANSFORMS, turn_tensor
from sbanet.inference.predictor import Predictor
from sbanet.training.adapt import (
    AdaptConfig,
    adapt_decoder,
    cache_features,
    cached_logits,
    decoder_level,
    evaluate_cached,
    trained_modules,
)
from sbanet.training.evaluation import evaluate


@pytest.mark.parametrize("train", ["decoder", "tcsa", "late"])
def test_late_cache_gives_the_model_s_own_logits_under_flips_and_turns(tiny32, tokenizer, train):
    dataset = tiny32_dataset(tokenizer, toy_samples(2, seed=3), augment=True)
    with single_thread():
        cache = cache_features(tiny32, dataset, transforms=8, batch_size=5, level="late")
        assert cache.level == "late" and cache.stage_input.shape[0] == len(dataset) * 8
        for row in (0, 7, 13):
            i, t = divmod(row, 8)
            image = turn_tensor(dataset.base_item(i)["image"], *TRANSFORMS[t])[None]
            with torch.no_grad():
                logits = tiny32(image, dataset.turned_ids[t, i][None], dataset.turned_attention[t, i][None])
                cached = cached_logits(tiny32, cache.select([row]), train)
            cached = F.interpolate(cached, size=(32, 32), mode="bilinear", align_corners=True)
            torch.testing.assert_close(cached, logits, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # TCSA run once over the late cache gives the decoder-level cache
        flat = decoder_level(tiny32, cache, batch_size=5)
        assert flat.level == "decoder" and len(flat) == len(cache)
        torch.testing.assert_close(cached_logits(tiny32, flat), cached_logits(tiny32, cache), atol=1e-5, rtol=1e-5)
    direct = evaluate(tiny32, tiny32_dataset(tokenizer, toy_samples(2, seed=3)), batch_size=4)
    with single_thread():
        flat = cache_features(tiny32, tiny32_dataset(tokenizer, toy_samples(2, seed=3)), level="late")
    assert evaluate_cached(tiny32, flat)["mIoU"] == pytest.approx(direct["mIoU"], abs=1e-3)


def test_late_training_changes_only_the_late_layers_and_keeps_the_best_check(tiny32, tokenizer):
    model = sbanet_tiny(image_size=32, max_tokens=8).eval()
    model.load_state_dict(tiny32.state_dict())
    base = {k: v.clone() for k, v in model.state_dict().items()}
    prefixes = ("decoder.", "tcsa.", "visual_encoder.layers.3.", "fusions.3.", "stage_norms.3.")  # tiny32: Swin
    late = {k for k in base if k.startswith(prefixes)}
    assert set(trained_modules(model, "late")) == {"decoder", "tcsa", "stage", "fusion", "stage_norm"}
    data = tiny32_dataset(tokenizer, toy_samples(3, seed=5), augment=True)
    with single_thread():
        cache = cache_features(model, data, transforms=4, level="late")
        config = AdaptConfig(train="late", steps=6, lr=1e-2, batch_size=4, crop=0.5, check_every=2)
        result = adapt_decoder(model, cache, config, replay=cache, held_out=cache)
        after = evaluate_cached(model, cache)["mIoU"]
        with pytest.raises(ValueError, match="level='late'"):
            adapt_decoder(model, cache_features(model, data), config)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, base[k])}
    assert changed <= late
    assert after == pytest.approx(max(h["mIoU"] for h in result.history))  # the best check is kept
    assert (result.kept_step > 0) == bool(changed)
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_quick_job_trains_the_late_layers_and_registers_a_model_that_predicts(tmp_path, tiny32, tokenizer):
    base = save_pretrained(tiny32, tmp_path / "base", tokenizer=tokenizer)
    with toy_store(tmp_path, base, train_images=3) as store:
        config = FinetuneConfig(mode="quick", quick_train="late", quick_steps=8, quick_lr=1e-2, checkpoint_every=2)
        outcome = run_finetune(store, queue_finetune(store, 1, config, author="ana"))
        assert outcome.status == "succeeded"
        from annotate.store import runs

        with store.ReadSession() as session:
            new = runs.get_model_version(session, outcome.model_version_id)
            source = runs.checkpoint_source(store.files, new)
            kept = runs.get_run(session, outcome.run_id).config["plan"]["kept_step"]
    model, _ = load_pretrained(source)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, tiny32.state_dict()[k])}
    assert all(k.split(".")[0] in {"decoder", "tcsa", "fusions", "stage_norms", "visual_encoder"} for k in changed)
    early = ("text_encoder", "visual_encoder.layers.0", "visual_encoder.layers.2", "fusions.0", "fusions.2")
    assert not any(k.startswith(early) for k in changed)
    assert bool(changed) == (kept > 0)
    mask = Predictor.from_pretrained(source).predict(np.zeros((32, 32, 3), np.uint8), "the red square").mask
    assert mask.shape == (32, 32)


def test_quick_job_at_another_input_size_keeps_it_and_compares_with_the_base_as_it_was(tmp_path, tiny32, tokenizer):
    base = save_pretrained(tiny32, tmp_path / "base", tokenizer=tokenizer)
    with toy_store(tmp_path, base, train_images=3) as store:
        config = FinetuneConfig(mode="quick", quick_scale=2.0, quick_steps=4, checkpoint_every=2)
        outcome = run_finetune(store, queue_finetune(store, 1, config, author="ana"))
        assert outcome.status == "succeeded"
        from annotate.jobs.finetune_data import model_dataset, store_samples
        from annotate.store import runs

        with store.ReadSession() as session:
            source = runs.checkpoint_source(store.files, runs.get_model_version(session, outcome.model_version_id))
            checks = runs.get_run(session, outcome.run_id).config["plan"]["checks"]
            eval_ids = [m.id for m in runs.run_masks(session, outcome.run_id, "eval")]
        held_out = store_samples(store, eval_ids)
    assert load_pretrained(source)[0].config.image_size == 64
    # "before" is the base as it was (32 px); the step-0 check is the base at 64 px
    with single_thread():
        at_32 = evaluate(tiny32, model_dataset(held_out, tiny32.config, tokenizer), batch_size=4)["mIoU"]
    assert outcome.metrics_before["mIoU"] == pytest.approx(at_32, abs=1e-6)
    assert [c["step"] for c in checks] == [0, 2, 4]
    mask = Predictor.from_pretrained(source).predict(np.zeros((48, 48, 3), np.uint8), "the red square").mask
    assert mask.shape == (48, 48)
    with pytest.raises(ValueError, match="quick_scale"):
        FinetuneConfig(mode="quick", quick_scale=0.1)
