"""The plain BERT text encoder and tokenizer and the plain EfficientNet-Lite0 (inference without
transformers or timm) against those libraries' own: the same token ids, the same features, the
same checkpoint model."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_within_drift

from sbanet.build import sbanet_lite_config
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.inference.precision import autocast
from sbanet.inference.shipped import SHIPPED_MODEL
from sbanet.modeling.plain_bert import PlainBertModel, plain_bert_supported
from sbanet.modeling.plain_tokenizer import PlainTokenizer
from sbanet.modeling.text_encoder import MINILM, TextEncoder, load_tokenizer, tokenize

TEXTS = [
    "the water",
    "The oval green-and-red ground track field, on the LEFT!",
    "naïve café résumé 北京 buildings beside the motorway " * 3,  # accents, CJK, truncated
    "a",
    "   spaces\tand\ttabs   ",
]


@pytest.fixture(scope="module")
def plain_tokenizer() -> PlainTokenizer:
    found = load_tokenizer(MINILM, plain=True)
    assert isinstance(found, PlainTokenizer)
    return found


@pytest.mark.parametrize("pad_to_max", [True, False])
def test_plain_tokenizer_gives_transformers_ids(plain_tokenizer, tokenizer, pad_to_max):
    ids, mask = tokenize(plain_tokenizer, TEXTS, 20, pad_to_max)
    expected_ids, expected_mask = tokenize(tokenizer, TEXTS, 20, pad_to_max)
    assert ids.dtype == expected_ids.dtype and mask.dtype == expected_mask.dtype
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    assert ids.shape == (len(TEXTS), 20)  # the long text is truncated to 20 either way
    assert plain_tokenizer.convert_ids_to_tokens(ids[1].tolist()) == tokenizer.convert_ids_to_tokens(ids[1].tolist())


def test_plain_tokenizer_vocabulary_and_padding(plain_tokenizer, tokenizer):
    assert plain_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert plain_tokenizer.pad_token_id == tokenizer.pad_token_id


def test_plain_tokenizer_saves_what_transformers_reads(plain_tokenizer, tokenizer, tmp_path):
    plain_tokenizer.save_pretrained(tmp_path)
    reread = load_tokenizer(tmp_path)  # transformers' AutoTokenizer
    assert not isinstance(reread, PlainTokenizer)
    assert torch.equal(tokenize(reread, TEXTS, 20)[0], tokenize(tokenizer, TEXTS, 20)[0])
    assert torch.equal(tokenize(load_tokenizer(tmp_path, plain=True), TEXTS, 20)[0], tokenize(tokenizer, TEXTS, 20)[0])


def test_load_tokenizer_plain_falls_back_for_a_hub_id():
    # a name that is no local directory: transformers' loader (here: the offline MiniLM fallback)
    assert not isinstance(load_tokenizer("bert-base-uncased", plain=True), PlainTokenizer)


@pytest.mark.numerics
def test_plain_bert_gives_transformers_features(plain_tokenizer):
    config = sbanet_lite_config()
    ids, mask = tokenize(plain_tokenizer, TEXTS, 20)
    reference, plain = TextEncoder(config, pretrained=True).eval(), TextEncoder(config, pretrained=True, plain=True)
    assert isinstance(plain.bert, PlainBertModel)
    assert plain.state_dict().keys() == reference.state_dict().keys()
    with torch.no_grad():
        expected, found = reference(ids, mask), plain.eval()(ids, mask)
    real = mask.bool()
    # measured on AMD EPYC (AVX2) under ATEN_CPU_CAPABILITY=avx2 / default and ONEDNN_MAX_CPU_ISA=SSE41:
    # real tokens within 1.6e-6, padded positions 2.8e-5 (features up to 6.3); exact GELU replaced by
    # its tanh form changes real tokens by 2.5e-3
    assert_within_drift(found[real], expected[real], atol=2e-5, check="plain BERT, real tokens")
    assert_within_drift(found, expected, atol=3e-4, check="plain BERT, padded positions too")


@pytest.mark.numerics
def test_plain_bert_under_forced_bf16_matches_transformers(plain_tokenizer):
    # the predictor's bf16 path runs the text encoder under autocast: forced here, whatever the CPU
    config = sbanet_lite_config()
    ids, mask = tokenize(plain_tokenizer, TEXTS, 20)
    reference, plain = TextEncoder(config, pretrained=True).eval(), TextEncoder(config, pretrained=True, plain=True)
    with torch.no_grad():
        fp32 = reference(ids, mask)
        with autocast(torch.device("cpu"), "bf16"):
            expected, found = reference(ids, mask), plain.eval()(ids, mask)
    real = mask.bool()
    # measured on AMD EPYC (AVX2), default ISA, ONEDNN_MAX_CPU_ISA=AVX2 and, with
    # ATEN_CPU_CAPABILITY=default, SSE41: plain vs transformers, both in bf16, within 0.0090-0.0103 on
    # real tokens (features up to 6.3); bf16 itself moves transformers' features by 0.0128-0.0134
    assert_within_drift(found[real], expected[real], atol=0.03, check="plain vs transformers BERT, both bf16")
    assert_within_drift(found[real], fp32[real], atol=0.03, check="plain BERT in bf16 vs fp32")


def test_plain_bert_refuses_what_it_does_not_compute():
    assert plain_bert_supported(sbanet_lite_config().text_config)
    for change in ({"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"}, {"is_decoder": True}):
        arch = {**sbanet_lite_config().text_config, **change}
        assert not plain_bert_supported(arch)
        with pytest.raises(ValueError, match="does not compute"):
            PlainBertModel(arch)


@pytest.mark.numerics
def test_plain_checkpoint_load_is_the_same_model(tmp_path):
    source = SHIPPED_MODEL
    plain_model, plain_tokens = load_pretrained(source, plain=True)
    model, tokens = load_pretrained(source)
    assert isinstance(plain_model.text_encoder.bert, PlainBertModel) and isinstance(plain_tokens, PlainTokenizer)
    assert type(plain_model.visual_encoder.bn1).__module__ == "sbanet.modeling.plain_efficientnet"
    expected = model.state_dict()
    found = plain_model.state_dict()
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[k], expected[k]) for k in expected)
    images = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    ids, mask = tokenize(plain_tokens, ["the water"], model.config.max_tokens)
    with torch.no_grad():
        a = plain_model.probability(plain_model(images, ids, mask))
        b = model.probability(model(images, *tokenize(tokens, ["the water"], model.config.max_tokens)))
    # same weights; only the text features' 1e-6 float drift (see above) reaches the probabilities
    assert_within_drift(a, b, atol=1e-4, check="default model, plain vs transformers text encoder")
    # a model loaded the plain way saves a checkpoint transformers' path loads back
    save_pretrained(plain_model, tmp_path / "again", tokenizer=plain_tokens, include_text_encoder=True)
    again, _ = load_pretrained(tmp_path / "again")
    assert all(torch.equal(again.state_dict()[k], expected[k]) for k in expected)


def test_plain_efficientnet_is_timms_lite0():
    """Same keys, same stochastic-depth rates, the same features in eval and training mode."""
    import timm

    from sbanet.modeling.plain_efficientnet import EfficientNetLite0Features

    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False, drop_path_rate=0.2)
    plain = EfficientNetLite0Features(drop_path_rate=0.2)
    expected = {k: v for k, v in reference.state_dict().items() if k.split(".")[0] in ("conv_stem", "bn1", "blocks")}
    assert plain.state_dict().keys() == expected.keys()
    plain.load_state_dict(expected)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for group in reference.blocks for b in group]
    assert [b.drop_path_rate for group in plain.blocks for b in group] == pytest.approx(rates)
    images = torch.rand(2, 3, 97, 130, generator=torch.Generator().manual_seed(0))  # odd sizes: "same" padding
    for train in (False, True):
        reference.train(train), plain.train(train)
        torch.manual_seed(1)
        a = reference.blocks(reference.bn1(reference.conv_stem(images)))
        torch.manual_seed(1)
        b = plain.blocks(plain.bn1(plain.conv_stem(images)))
        assert torch.equal(a, b), f"train={train}"
