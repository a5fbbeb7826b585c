"""The inference fast path: same outputs as the eager model, shared weights, caches that follow
weight updates, the predictor's switches, and bf16 detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numerics import assert_within_drift

from sbanet import build_preset
from sbanet.inference import fast as fast_module
from sbanet.inference import runtime
from sbanet.inference.fast import (
    FastEfficientNetEncoder,
    FastSwinEncoder,
    FoldedDecoder,
    conv3x3_relu,
    fold_batchnorm,
    nnpack_ready,
    optimize_for_inference,
)
from sbanet.inference.precision import resolve_precision
from sbanet.inference.predictor import Predictor
from sbanet.inference.runtime import DerivedCache, TextFeatureCache


def _randomise_batchnorms(model: torch.nn.Module) -> None:
    """Fresh BatchNorms are identities; give them statistics so folding is really tested."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def _inputs(batch: int, size: int, length: int = 9):
    ids = torch.randint(1000, 2000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0
    return torch.randn(batch, 3, size, size), ids, mask


# 200: stage maps 50/25/13/7 are not multiples of the 7-wide windows (padding, odd merges);
# 224: no padding, shifted windows everywhere but the last stage
@pytest.mark.parametrize(
    ("preset", "ablation", "size"),
    [
        ("sbanet_tiny", "full", 200),
        ("sbanet_tiny", "full", 224),
        ("sbanet_tiny", "lavt", 200),
        ("sbanet_lite", "full", 96),
    ],
)
@pytest.mark.numerics
def test_fast_model_matches_eager(preset, ablation, size):
    model = build_preset(preset, ablation=ablation).eval()
    _randomise_batchnorms(model)
    fast = optimize_for_inference(model)
    encoder = FastSwinEncoder if preset == "sbanet_tiny" else FastEfficientNetEncoder
    assert isinstance(fast.visual_encoder, encoder) and isinstance(fast.decoder, FoldedDecoder)
    images, ids, mask = _inputs(2, size)
    with torch.inference_mode():
        assert_within_drift(
            fast(images, ids, mask), model(images, ids, mask), atol=2e-5, rtol=1e-4, check="fast logits"
        )


@pytest.mark.numerics
def test_folded_efficientnet_checks_the_weights_once_per_forward_and_follows_updates(monkeypatch):
    model = build_preset("sbanet_lite").eval()
    _randomise_batchnorms(model)
    fast = optimize_for_inference(model)
    checks = []
    real = runtime.weights_signature
    monkeypatch.setattr(runtime, "weights_signature", lambda module: checks.append(module) or real(module))
    images, ids, mask = _inputs(1, 96)
    with torch.no_grad():
        before = fast(images, ids, mask)
        encoder_checks = [m for m in checks if m is model.visual_encoder]
        assert len(encoder_checks) == 1, "one weight check for the stem and the four stages"
        model.visual_encoder.stages[2][0][0].bn1.running_mean.add_(0.5)  # an in-place update, like a step
        assert_within_drift(
            fast(images, ids, mask), model(images, ids, mask), atol=2e-5, rtol=1e-4, check="updated encoder"
        )
        assert not torch.allclose(before, fast(images, ids, mask))
        # the stages after a prefix reuse its check up to the last; a kept prefix run again checks
        prefix = fast.encode_image_prefix(images)
        checks.clear()
        fast.visual_pyramid(prefix)
        assert not [m for m in checks if m is model.visual_encoder]
        fast.visual_pyramid(prefix)
        assert len([m for m in checks if m is model.visual_encoder]) == 1
    model.train()  # training mode: the plain modules again, no check
    checks.clear()
    fast.visual_encoder.stem(images)
    assert not checks


def test_fast_model_shares_weights_and_state_dict_keys(tiny_model):
    fast = optimize_for_inference(tiny_model)
    ours, theirs = fast.state_dict(), tiny_model.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].data_ptr() == theirs[k].data_ptr() for k in ours)


@pytest.mark.numerics
def test_folded_decoder_follows_weight_updates_and_trains_as_is():
    model = build_preset("sbanet_tiny").eval()
    fast = optimize_for_inference(model)
    images, ids, mask = _inputs(1, 64)
    with torch.no_grad():
        before = fast(images, ids, mask)
        model.decoder.fuse2[0][1].running_mean.add_(0.5)  # an in-place update, like a training step
        assert_within_drift(
            fast(images, ids, mask), model(images, ids, mask), atol=2e-5, rtol=1e-4, check="updated weights"
        )
    assert not torch.allclose(before, fast(images, ids, mask))
    model.train()  # the shared modules' mode decides: the fast model now runs the plain forward
    features = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate(model.config.stage_dims)]
    assert_within_drift(
        fast.decoder(features), model.decoder(features), atol=1e-5, rtol=1.3e-6, check="train-mode decoder"
    )


@pytest.mark.numerics
@pytest.mark.parametrize("nnpack", [True, False])
def test_fold_batchnorm_and_conv3x3(monkeypatch, nnpack):
    if not nnpack:
        monkeypatch.setattr(fast_module, "nnpack_ready", lambda: False)
    conv, bn = torch.nn.Conv2d(8, 6, 3, padding=1, bias=True), torch.nn.BatchNorm2d(6)
    _randomise_batchnorms(bn)
    bn.eval()
    weight, bias = fold_batchnorm(conv, bn)
    large, small = torch.randn(2, 8, 60, 60), torch.randn(1, 8, 20, 20)  # NNPACK only for the large map
    with torch.no_grad():
        for x in (large, small):
            assert_within_drift(
                conv3x3_relu(x, weight, bias), F.relu(bn(conv(x))), atol=1e-4, rtol=1e-4, check="folded conv"
            )
    assert isinstance(nnpack_ready(), bool)


@pytest.mark.numerics
def test_folded_decoder_runs_bf16_convolutions_under_cpu_bf16_autocast(monkeypatch):
    """Under CPU bf16 autocast the folded decoder's 3x3 convolutions take bf16 inputs and the
    bf16 copies of the folded weights (cast once, refolded after an update), never NNPACK's fp32
    kernel; the result agrees with the eager decoder under the same autocast."""
    model = build_preset("sbanet_tiny").eval()
    _randomise_batchnorms(model.decoder)
    decoder = FoldedDecoder(model.decoder)
    features = [torch.randn(1, c, 128 // 2**i, 128 // 2**i) for i, c in enumerate(model.config.stage_dims)]
    seen = []
    real_conv = fast_module.conv3x3_relu
    monkeypatch.setattr(fast_module, "conv3x3_relu", lambda x, w, b: seen.append((x.dtype, w)) or real_conv(x, w, b))
    monkeypatch.setattr(fast_module, "nnpack_ready", lambda: True)  # large maps would take NNPACK in fp32
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: pytest.fail("NNPACK under bf16"))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = decoder(features)
        reference = model.decoder(features)
        again = decoder(features)
    assert [dtype for dtype, _ in seen] == [torch.bfloat16] * 12
    assert all(w.dtype == torch.bfloat16 for _, w in seen)
    assert all(a is b for (_, a), (_, b) in zip(seen[:6], seen[6:]))  # cast once, not per forward
    assert logits.dtype == torch.float32 and torch.equal(logits, again)
    # measured 0.002-0.003 on logits of 0.25-0.37 (AVX-512, ATEN_CPU_CAPABILITY=default, oneDNN AVX2)
    assert_within_drift(logits, reference, atol=0.01, check="bf16 folded decoder vs eager decoder under bf16")
    model.decoder.fuse2[0][1].running_mean.add_(0.5)
    assert decoder.folded(torch.bfloat16)[2][0][0] is not seen[4][1]  # refolded after the update
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        decoder.folded(torch.float16)


def test_int8_swin_linears_agree_and_leave_the_model_alone():
    model = build_preset("sbanet_tiny").eval()
    fast = optimize_for_inference(model, quantize=True)
    images, ids, mask = _inputs(1, 96)
    with torch.inference_mode():
        reference = model.probability(model(images, ids, mask))
        quantized = model.probability(fast(images, ids, mask))
    assert (quantized - reference).abs().max() < 0.02
    int8_layers = fast.visual_encoder.int8_layers.get()
    assert not any(type(m) is torch.nn.Linear for m in int8_layers.modules())  # all quantized
    assert all(type(m.qkv) is torch.nn.Linear for m in model.modules() if hasattr(m, "qkv"))  # original intact


def test_derived_cache_rebuilds_only_after_a_change():
    module = torch.nn.Linear(3, 3)
    calls = []
    cache = DerivedCache(module, lambda m: calls.append(1) or m.weight.sum().item())
    first = cache.get()
    assert cache.get() == first and len(calls) == 1
    with torch.no_grad():
        module.weight.add_(1.0)
    assert cache.get() == pytest.approx(first + 9.0, abs=1e-5) and len(calls) == 2


# --- the predictor's fast path ---------------------------------------------------------------
@pytest.mark.numerics
def test_predictor_fast_and_eager_agree(tiny_model, tokenizer):
    image = np.random.default_rng(3).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    texts = ["the water", "the red roofs of the houses on the left"]
    eager = Predictor(tiny_model, tokenizer, fast=False, precision="fp32").predict_batch(image, texts)
    fast = Predictor(tiny_model, tokenizer, precision="fp32").predict_batch(image, texts)
    for e, f in zip(eager, fast):
        assert_within_drift(f.probability, e.probability, atol=1e-5, check="probability")
        assert e.attention.tokens == f.attention.tokens
        assert_within_drift(f.attention.pixel_word[0], e.attention.pixel_word[0], atol=1e-5, check="pixel-word map")


def test_text_cache_hits_evicts_and_follows_weights(tokenizer):
    model = build_preset("sbanet_tiny").eval()
    predictor = Predictor(model, tokenizer, text_cache_size=2)
    image = np.zeros((40, 40, 3), np.uint8)
    first = predictor.predict(image, "the water", return_attention=False)
    again = predictor.predict(image, "the  water", return_attention=False)  # same normalised text
    np.testing.assert_array_equal(first.probability, again.probability)
    assert (predictor.text_cache.hits, predictor.text_cache.misses) == (1, 1)
    predictor.predict_batch(image, ["a road", "a field"], return_attention=False)
    assert len(predictor.text_cache) == 2  # bounded: "the water" was evicted
    with torch.no_grad():
        model.text_encoder.bert.embeddings.word_embeddings.weight.mul_(2.0)
    predictor.predict(image, "a road", return_attention=False)
    assert len(predictor.text_cache) == 1  # new weights: old entries dropped
    assert Predictor(model, tokenizer, fast=False).text_cache.capacity == 0
    with pytest.raises(ValueError, match="capacity"):
        TextFeatureCache(-1)


def test_quantize_needs_the_fast_path_on_cpu(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="fast path"):
        Predictor(tiny_model, tokenizer, fast=False, quantize=True)


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx512f", "avx512_bf16", "amx_bf16"}])
def test_auto_does_not_depend_on_the_cpu(monkeypatch, tiny_model, tokenizer, flags):
    """auto follows the preset's measured policy: the same precision with or without native bf16."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if len(flags) > 2 else "AVX2")
    assert runtime.cpu_supports_bf16() == (len(flags) > 2)
    for fast in (True, False):
        predictor = Predictor(tiny_model, tokenizer, fast=fast)
        assert predictor.precision.name == "fp32" and predictor.autocast_dtype is None
        assert predictor.label("tiny") == "tiny · cpu · fp32"


def test_precision_choices_are_checked(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        Predictor(tiny_model, tokenizer, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        Predictor(tiny_model, tokenizer, precision="int4")
    with pytest.raises(ValueError, match="expression_chunk"):
        Predictor(tiny_model, tokenizer, expression_chunk=0)
    assert resolve_precision("BF16", "cpu", "sbanet_tiny").dtype is torch.bfloat16
    assert resolve_precision("auto", "cuda", "sbanet_lite").name == "fp32"  # not measured on a GPU yet
    assert "no reduced-precision policy" in resolve_precision("auto", "cpu", "my_preset").reason


@pytest.mark.parametrize(
    ("fast", "quantize"), [(True, False), (False, False), (True, True)], ids=["fast", "eager", "fast-int8"]
)
def test_forced_bf16_runs_on_every_cpu(tiny_model, tokenizer, fast, quantize):
    """The bf16 path (native on CUDA / AMX, emulated elsewhere: slow, so a tiny model and image)
    and int8 Swin linears inside bf16 autocast, against fp32: close, with finite probabilities."""
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    texts = ["the car", "the red roofs on the left"]
    bf16 = Predictor(tiny_model, tokenizer, fast=fast, precision="bf16", quantize=quantize)
    assert bf16.precision.name == "bf16" and bf16.autocast_dtype is torch.bfloat16
    fp32 = Predictor(tiny_model, tokenizer, fast=False, precision="fp32")
    for a, b in zip(bf16.predict_batch(image, texts), fp32.predict_batch(image, texts)):
        assert a.probability.dtype == np.float32 and np.isfinite(a.probability).all()
        assert np.abs(a.probability - b.probability).max() < 0.05
        assert a.attention is not None and len(a.attention.pixel_word) == 4


def test_bf16_keeps_attention_softmax_and_classifier_in_fp32(tiny_model):
    """Under bf16 autocast the fast path's window-attention weights and its logits are fp32."""
    fast = optimize_for_inference(tiny_model)
    images, ids, mask = _inputs(1, 64)
    seen = []
    hook = fast.decoder.classifier.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = fast(images, ids, mask)
    hook.remove()
    assert seen == [(torch.float32, torch.float32)] and logits.dtype == torch.float32
    with torch.inference_mode():
        reference = tiny_model(images, ids, mask)
    assert (logits - reference).abs().max() < 0.1


@pytest.mark.numerics
def test_expressions_run_in_chunks_with_the_same_answers(tiny_model, tokenizer):
    """One at a time (Swin-B's CPU rule), two at a time and all at once give the same masks."""
    image = np.random.default_rng(4).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    texts = ["the water", "all buildings in the top left", "the road", "a tree"]
    assert runtime.expression_chunk("cpu", "sbanet_swin_b", 8) == 1
    assert (
        runtime.expression_chunk("cpu", "sbanet_lite", 8) == 8
        and runtime.expression_chunk("cuda", "sbanet_swin_b", 8) == 8
    )
    with pytest.raises(ValueError, match="at least one"):
        runtime.expression_chunk("cpu", "sbanet_lite", 0)
    runs = [
        Predictor(tiny_model, tokenizer, precision="fp32", expression_chunk=c).predict_batch(image, texts)
        for c in (1, 2, None)
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_within_drift(a.probability, b.probability, atol=1e-5, check="probability")
            assert a.attention.tokens == b.attention.tokens
            assert_within_drift(a.attention.pixel_word[1], b.attention.pixel_word[1], atol=1e-5, check="pixel-word map")
