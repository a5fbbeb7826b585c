"""Correction heads (``quick_train="head"``): a pixel classifier on the language-free image
pyramid that corrects the model's foreground logit where the corrected expressions are asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training_fixtures import single_thread, tiny32_dataset, toy_samples, toy_store

from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, run_finetune
from sbanet import sbanet_tiny
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.config import SBANetConfig
from sbanet.data import ReferringDataset
from sbanet.data.augment import TRANSFORMS, turn_tensor
from sbanet.inference.predictor import Predictor
from sbanet.modeling.correction_head import GATE_FULL, GATE_OFF, CorrectionHead, sentence_embedding
from sbanet.training.adapt import AdaptConfig, adapt_decoder, add_correction_heads, cache_features, cached_logits


def _copy(tiny32: torch.nn.Module) -> torch.nn.Module:
    model = sbanet_tiny(image_size=32, max_tokens=8).eval()
    model.load_state_dict(tiny32.state_dict())
    return model


def test_gate_opens_with_the_similarity_to_a_taught_expression():
    head = CorrectionHead((4, 4, 4, 4), text_dim=3, keys=1)
    head.keys.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
    middle = (GATE_OFF + GATE_FULL) / 2
    on_circle = [[1.0, 0.0], [0.0, 1.0], [middle, (1 - middle**2) ** 0.5], [GATE_OFF, (1 - GATE_OFF**2) ** 0.5]]
    queries = torch.tensor([[a, b, 0.0] for a, b in on_circle])
    torch.testing.assert_close(head.gate(queries), torch.tensor([1.0, 0.0, 0.5, 0.0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least one"):
        CorrectionHead((4, 4, 4, 4), text_dim=3, keys=0)
    with pytest.raises(ValueError, match="correction_keys"):
        SBANetConfig(correction_keys=(2, 0))


def test_cached_head_logits_are_the_model_s_own_and_a_new_head_changes_nothing(tiny32, tokenizer):
    model = _copy(tiny32)
    assert model.correction is None
    dataset = tiny32_dataset(tokenizer, toy_samples(2, seed=3), augment=True)
    with single_thread():
        cache = cache_features(model, dataset, transforms=8, batch_size=5, level="head")
    assert cache.level == "head" and len(cache.pyramid) == 4
    assert cache.sentences.shape == (len(dataset) * 8, model.config.text_dim)
    with torch.no_grad():
        before = cached_logits(model, cache)
        heads = add_correction_heads(model, cache)
        assert len(heads) >= 1 and model.config.correction_keys == tuple(len(h.keys) for h in heads)
        torch.testing.assert_close(cached_logits(model, cache), before)  # zero-initialised: the base's answer
        for p in model.correction.parameters():
            p.add_(0.05 * torch.randn_like(p))
        changed = cached_logits(model, cache)
    assert not torch.allclose(changed, before)
    for row in (0, 7, 13):  # the cache's path and the model's forward agree, heads included
        i, t = divmod(row, 8)
        image = turn_tensor(dataset.base_item(i)["image"], *TRANSFORMS[t])[None]
        with torch.no_grad():
            logits = model(image, dataset.turned_ids[t, i][None], dataset.turned_attention[t, i][None])
        cached = F.interpolate(changed[row : row + 1], size=(32, 32), mode="bilinear", align_corners=True)
        torch.testing.assert_close(cached, logits, atol=2e-3, rtol=2e-3)  # the pyramid is cached in fp16


def test_head_training_changes_only_the_heads_and_needs_a_head_cache(tiny32, tokenizer):
    model = _copy(tiny32)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    data = tiny32_dataset(tokenizer, toy_samples(3, seed=5), augment=True)
    with single_thread():
        cache = cache_features(model, data, transforms=4, level="head")
        config = AdaptConfig(train="head", steps=6, lr=1e-2, batch_size=4, crop=0.5, check_every=2)
        result = adapt_decoder(model, cache, config, replay=cache, held_out=cache)
        with pytest.raises(ValueError, match="level='head'"):
            adapt_decoder(model, cache_features(model, data), config)
    state = model.state_dict()
    assert {k for k in state if k not in base} == {k for k in state if k.startswith("correction.")}
    assert all(torch.equal(state[k], v) for k, v in base.items())  # nothing of the network moved
    assert result.history[0]["step"] == 0 and all(p.requires_grad for p in model.parameters())


@pytest.mark.numerics
def test_quick_head_job_registers_a_model_that_loads_and_predicts(tmp_path, tiny32, tokenizer):
    base = save_pretrained(tiny32, tmp_path / "base", tokenizer=tokenizer)
    with toy_store(tmp_path, base, train_images=3) as store:
        config = FinetuneConfig(mode="quick", quick_train="head", quick_steps=8, quick_lr=1e-2, checkpoint_every=2)
        outcome = run_finetune(store, queue_finetune(store, 1, config, author="ana"))
        assert outcome.status == "succeeded"
        from annotate.store import runs

        with store.ReadSession() as session:
            source = runs.checkpoint_source(store.files, runs.get_model_version(session, outcome.model_version_id))
    model, _ = load_pretrained(source)
    assert model.config.correction_keys and model.correction is not None
    own = tiny32.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items() if not k.startswith("correction."))
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    predictor = Predictor.from_pretrained(source)
    with torch.no_grad():
        assert predictor.predict(image, "the red square").mask.shape == (40, 40)
    # the shipped runtime (folded encoders) and the plain model give the same probabilities
    plain = Predictor(model.eval(), predictor.tokenizer, fast=False)
    torch.testing.assert_close(
        torch.from_numpy(plain.predict(image, "the red square").probability),
        torch.from_numpy(predictor.predict(image, "the red square").probability),
        atol=1e-4,
        rtol=1e-4,
    )
    ids, mask = predictor.tokenize(["the red square"])
    with torch.no_grad():
        sentences = sentence_embedding(model.encode_text(ids, mask), mask)
    assert float(model.correction.heads[0].gate(sentences)) > 0  # the expression below opens a head
    # the bf16 path, forced whatever the CPU, runs the heads too and stays near fp32: max abs
    # probability difference 6.7e-4-7.8e-4 measured under the native ISA, ATEN_CPU_CAPABILITY=default
    # and ONEDNN_MAX_CPU_ISA=AVX2 (AVX2 EPYC); bound with margin
    bf16 = Predictor.from_pretrained(source, precision="bf16").predict(image, "the red square").probability
    fp32 = predictor.predict(image, "the red square").probability
    assert np.abs(bf16 - fp32).max() < 5e-3


def test_random_crops_cut_the_heads_pyramid_with_the_decoder_maps(tiny32, tokenizer, monkeypatch):
    model = _copy(tiny32)
    # at 128 px the coarsest map has 4 x 4 cells, so a crop can cut it (32 px gives a single cell)
    data = ReferringDataset(toy_samples(2, seed=7), 128, tokenizer, max_tokens=8, augment=True)
    seen = []
    original = CorrectionHead.correction

    def spy(head, pyramid, foreground):
        seen.append((tuple(pyramid[0].shape[-2:]), tuple(foreground.shape[-2:])))
        return original(head, pyramid, foreground)

    monkeypatch.setattr(CorrectionHead, "correction", spy)
    with single_thread():
        cache = cache_features(model, data, transforms=2, level="head")
        adapt_decoder(model, cache, AdaptConfig(train="head", steps=4, lr=1e-2, batch_size=2, crop=0.25, seed=1))
    assert seen and all(level0 == foreground for level0, foreground in seen)  # same window, same grid
    assert any(foreground != tuple(cache.features[0].shape[-2:]) for _, foreground in seen)  # it did crop


def test_the_pyramid_is_computed_only_for_expressions_a_head_recognises(tiny32, tokenizer, monkeypatch):
    model = _copy(tiny32)
    data = tiny32_dataset(tokenizer, toy_samples(1, seed=3))
    with single_thread(), torch.no_grad():
        cache = cache_features(model, data, level="head")
        add_correction_heads(model, cache)
        item = data.base_item(0)
        image, ids, attention = item["image"][None], data.turned_ids[0, 0][None], data.turned_attention[0, 0][None]
        calls = []
        original = model.visual_pyramid
        monkeypatch.setattr(model, "visual_pyramid", lambda prefix: calls.append(len(prefix)) or original(prefix))
        model(image, ids, attention)
        assert calls == [1]  # its own expression: the head runs
        model.correction.heads[0].keys.neg_()  # now the expression is the opposite of every key
        base = model(image, ids, attention)
        assert calls == [1]  # no head's gate opens: the image stages do not run again
        model.correction = None
        torch.testing.assert_close(base, model(image, ids, attention))


def test_the_quick_default_weights_the_foreground_in_the_heads_loss(tiny32, tokenizer, monkeypatch):
    from annotate.jobs.finetune_quick import adapt_config

    settings = adapt_config(FinetuneConfig(mode="quick"))
    assert settings.train == "head" and settings.foreground_weight == 3.0
    model = _copy(tiny32)
    seen: list[torch.Tensor | None] = []
    original = type(model).loss

    def spy(self, logits, target, class_weights=None):
        seen.append(class_weights)
        return original(self, logits, target, class_weights)

    monkeypatch.setattr(type(model), "loss", spy)
    data = tiny32_dataset(tokenizer, toy_samples(2, seed=3), augment=True)
    with single_thread():
        cache = cache_features(model, data, transforms=2, level="head")
        for weight in (3.0, None):
            seen.clear()
            adapt_decoder(model, cache, AdaptConfig(train="head", steps=2, batch_size=2, foreground_weight=weight))
            if weight is None:
                assert seen == [None, None]  # the model's own class weights
            else:
                assert len(seen) == 2 and all(torch.equal(w, torch.tensor([1.0, weight])) for w in seen)


def test_a_head_run_is_reproducible_from_its_seed_whatever_the_global_generator(tiny32, tokenizer):
    data = tiny32_dataset(tokenizer, toy_samples(2, seed=4), augment=True)
    states = []
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        model = _copy(tiny32)
        torch.manual_seed(global_seed)
        with single_thread():
            cache = cache_features(model, data, transforms=2, level="head")
            adapt_decoder(model, cache, AdaptConfig(train="head", steps=3, batch_size=2, lr=1e-2, seed=seed))
        states.append({k: v.clone() for k, v in model.state_dict().items() if k.startswith("correction.")})
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())  # same seed: the same heads
    assert not all(torch.equal(v, states[2][k]) for k, v in states[0].items())  # another seed: others
