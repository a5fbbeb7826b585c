"""The composed model: shapes for every preset, gradients, padding, ablations and their sizes."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_within_drift

from sbanet import ABLATIONS, PRESETS, build_preset
from sbanet.build import PRESET_CONFIGS, build_model, count_parameters
from sbanet.config import ADDED_FIELD_VALUES, SBANetConfig


def _inputs(batch: int, size: int, length: int = 12):
    images = torch.randn(batch, 3, size, size)
    ids = torch.randint(1000, 2000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return images, ids, mask


def _check_stage_shapes(model, size):
    config = model.config
    images, ids, mask = _inputs(1, size)
    x = model.visual_encoder.stem(images)
    for i, (dim, stride) in enumerate(zip(config.stage_dims, (4, 8, 16, 32))):
        x = model.visual_encoder.stage(i, x)
        assert x.shape == (1, size // stride, size // stride, dim), (config.name, i)
    logits, attn = model(images, ids, mask, return_attention=True)
    assert logits.shape == (1, 2, size, size)
    for i, stage in enumerate(attn["stages"]):
        h = size // (4 * 2**i)
        assert stage["pixel_word"].shape == (1, h, h, ids.shape[1])
        assert stage["query"].shape == (1, config.queries_per_stage[i], h, h)
        assert stage["alignment"].shape == (1, ids.shape[1], config.queries_per_stage[i])
        torch.testing.assert_close(stage["word_relevance"].sum(-1), torch.ones(1))
    m = attn["tcsa"]["spatial"].shape[-1]
    assert m == min(config.tcsa_grid, size // 32) ** 2


@pytest.mark.parametrize("preset", ["sbanet_tiny", "sbanet_lite"])
@torch.no_grad()
def test_stage_shapes_small_presets(preset):
    model = build_preset(preset, pretrained=False).eval()
    _check_stage_shapes(model, 224)


@torch.no_grad()
def test_swin_b_random_weights_at_448_and_480():
    """The paper preset, built once with random weights: 448 (ours) and 480 (LAVT) both run."""
    model = build_preset("sbanet_swin_b", pretrained=False).eval()
    assert model.config.stage_dims == (128, 256, 512, 1024)
    assert [len(layer.blocks) for layer in model.visual_encoder.layers] == [2, 2, 18, 2]
    _check_stage_shapes(model, 448)
    images, ids, mask = _inputs(1, 480)
    assert model(images, ids, mask).shape == (1, 2, 480, 480)


def test_every_parameter_gets_a_gradient():
    # 224: every DFS window still pools stage 4 (7x7) to more than one cell; a single cell
    # is zero after PWAM's instance norm and could not receive a gradient.
    model = build_preset("sbanet_tiny").train()
    images, ids, mask = _inputs(2, 224)
    target = (torch.rand(2, 224, 224) > 0.5).long()
    model.loss(model(images, ids, mask), target).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []


@pytest.mark.parametrize(
    "ablation",
    ["full", "lavt", "tokens_cross_attention", "tokens_self_attention", "tokens_group_attention", "tcsa_no_text"],
)
@pytest.mark.numerics
@torch.no_grad()
def test_padding_tokens_do_not_change_the_output(ablation):
    model = build_preset("sbanet_tiny", ablation=ablation).eval()
    images, ids, mask = _inputs(2, 64, length=10)
    out = model(images, ids, mask)
    other_ids = ids.clone()
    other_ids[0, 5:] = torch.randint(3000, 4000, (5,))  # new tokens under the padding
    torch.testing.assert_close(model(images, other_ids, mask), out)
    # and a shorter padded length gives the same result for the padded sample
    out_short = model(images[:1], ids[:1, :5], mask[:1, :5])
    assert_within_drift(out_short, out[:1], atol=1e-5, rtol=1e-4, check="shorter padding")


# --- ablations: each builds, runs and changes the parameter count by the formula -------------
def _pwam(c, d):
    return 4 * (c * c + c) + 2 * (d * c + c)


def _dfs(c, d, cfg: SBANetConfig):
    w = len(cfg.dfs_windows)
    projections = sum(1 for k in cfg.dfs_windows if k > 1 or cfg.dfs_project_micro)
    return w * _pwam(c, d) + projections * (c * c + c + 2 * c) + (w * c * c + c) + (c * c + c) + 2 * c


def _mlp(q):
    return (q * 4 * q + 4 * q) + (4 * q * q + q)


def _tokens(c, cfg: SBANetConfig, m):
    q = cfg.query_dim
    if cfg.query_mode == "group":  # tokens, W_q, W_k, W_v, 2 LN, MLP, LN
        return m * q + (q * q + q) + 2 * (c * q + q) + 4 * q + _mlp(q) + 2 * q
    table = m * q * (2 if cfg.query_pos_embed else 1)
    if cfg.bam_attention == "single":  # W_q, W_k, W_v, 3 LN, MLP, LN
        return table + (q * q + q) + 2 * (c * q + q) + 6 * q + _mlp(q) + 2 * q
    return table + 2 * (q * q + q) + 2 * (c * q + q) + 4 * q + _mlp(q)


def _alignment(d, q, cfg: SBANetConfig):
    values = (q * q + q) if cfg.bam_attention == "single" else 0  # w_iv apart from w_ik
    return (d * q + q) + (q * q + q) + values + (q * d + d + 2 * d) + 2 * (d * d + d)


def _tcsa(cfg: SBANetConfig):
    dims, cc, g = cfg.stage_dims, cfg.tcsa_concat_dim, cfg.tcsa_text_dim
    s = sum(dims)
    concat_norm = 2 * cc if cfg.tcsa_concat_norm else 0
    n = (cfg.text_dim * g + g + g * g + g + 2 * g) if cfg.tcsa_text else 0
    n += 2 * s + concat_norm  # scale norms, concat norm
    n += (2 * s + 4 * cc + 2 * s) if cfg.tcsa_channel else 0
    n += (4 * cc + 4 * s) if cfg.tcsa_spatial else 0
    n += (2 * s + concat_norm) if cfg.tcsa_spatial and cfg.tcsa_order == "sequential" else 0  # Eq. 10's LN
    n += (2 * s + sum(8 * c * c + 5 * c for c in dims)) if cfg.tcsa_ffn else 0  # FFN norms + FFNs
    if cfg.tcsa_reconstruct == "conv_bn_relu":
        n += sum(c * c + 2 * c for c in dims)  # reconstruction conv + BN
    else:
        n += 2 * s  # the 1x1 depthwise convolutions
    return n


def expected_fusion_extra(cfg: SBANetConfig) -> int:
    """Parameters a config adds on top of LAVT's PWAMs (stage norms, gates, decoder equal)."""
    d = cfg.text_dim
    q = cfg.query_dim
    extra = 0
    for i, c in enumerate(cfg.stage_dims):
        if cfg.dfs:
            extra += _dfs(c, d, cfg) - _pwam(c, d)
        if cfg.bam:
            extra += _alignment(d, q, cfg)
            if cfg.query_mode in ("learnable", "group"):
                extra += _tokens(c, cfg, cfg.queries_per_stage[i])
            elif cfg.query_mode in ("self", "pixel_self"):  # over the words / over the pixels
                source = d if cfg.query_mode == "self" else c
                extra += (source * q + q) + (q * 3 * q + 3 * q) + (q * q + q) + 4 * q + _mlp(q)
            else:
                extra += (c * q + q) + 4 * q + _mlp(q)
    if cfg.tcsa:
        extra += _tcsa(cfg)
    return extra


LEGACY_FORMS = {
    "bam_attention": "multihead",
    "dfs_project_micro": True,
    "tcsa_order": "parallel",
    **ADDED_FIELD_VALUES,
}


@pytest.mark.parametrize("legacy", [False, True], ids=["paper", "legacy"])
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_builds_runs_and_has_expected_size(ablation, legacy):
    cfg = PRESET_CONFIGS["sbanet_tiny"](**ABLATIONS[ablation], **(LEGACY_FORMS if legacy else {}))
    model = build_model(cfg).eval()
    # LAVT with the same encoders (Table VI's rows change them)
    lavt = build_model(PRESET_CONFIGS["sbanet_tiny"](**{**ABLATIONS[ablation], **ABLATIONS["lavt"]}))
    assert count_parameters(model) - count_parameters(lavt) == expected_fusion_extra(cfg)
    images, ids, mask = _inputs(1, 64)
    with torch.no_grad():
        assert model(images, ids, mask).shape == (1, 2, 64, 64)


def test_lavt_baseline_is_plain_pwam_and_gate():
    model = build_preset("sbanet_tiny", ablation="lavt")
    assert model.config.is_lavt and model.tcsa is None
    for i, fusion in enumerate(model.fusions):
        assert fusion.query_tokens is None and fusion.alignment is None and fusion.dfs is None
        assert fusion.pwam is not None
        assert (fusion.gate is None) == (i == 3)  # LAVT discards the last stage's gated sum


def test_registry_builders_and_bad_names():
    assert set(PRESETS) == {"sbanet_swin_b", "sbanet_lite", "sbanet_tiny"}
    with pytest.raises(ValueError, match="unknown preset"):
        build_preset("nope")
    with pytest.raises(ValueError, match="unknown ablation"):
        build_preset("sbanet_tiny", ablation="nope")
    with pytest.raises(ValueError, match="query_mode"):
        PRESET_CONFIGS["sbanet_tiny"](query_mode="sideways")
    with pytest.raises(ValueError, match="num_queries"):
        PRESET_CONFIGS["sbanet_tiny"](num_queries=(1, 2))


def test_config_round_trips_through_dict():
    cfg = PRESET_CONFIGS["sbanet_lite"](num_queries=(8, 8, 4, 4))
    assert SBANetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown SBANet config fields"):
        SBANetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_soft_dice_term_scores_overlap_and_is_off_by_default():
    from sbanet.modeling.sbanet import soft_dice_loss

    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:6, 3:4] = 1  # a thin strip; sample 1 refers to nothing
    sure = torch.stack([(1 - target) * 20.0 - 10.0, target * 20.0 - 10.0], dim=1).float()
    assert soft_dice_loss(sure, target) < 1e-3  # right on both, the empty target included
    assert soft_dice_loss(-sure, target) > 0.95  # the strip missed and the empty one filled
    empty = torch.stack([torch.full((2, 8, 8), 5.0), torch.full((2, 8, 8), -5.0)], dim=1)
    # predicting nothing costs cross-entropy little on a thin target; Dice charges it nearly in
    # full (4 pixels and smooth 1: 1 - 1/5)
    assert torch.nn.functional.cross_entropy(empty[:1], target[:1]) < 0.7
    assert soft_dice_loss(empty[:1], target[:1]) > 0.75

    model = build_preset("sbanet_tiny", pretrained=False)
    assert model.config.dice_weight == 0.0  # the paper's loss unless a recipe asks
    ce = model.loss(empty, target)
    with_dice = build_model(model.config.replace(dice_weight=2.0), pretrained=False)
    expected = ce + 2.0 * soft_dice_loss(empty, target)
    torch.testing.assert_close(with_dice.loss(empty, target), expected)
    with pytest.raises(ValueError, match="dice_weight"):
        model.config.replace(dice_weight=-1.0)
    # a checkpoint trained with one loss starts a run with another: the weights are the same
    assert model.config.without_loss() == with_dice.config.without_loss()
    assert model.config.without_loss() != model.config.replace(decoder_dim=model.config.decoder_dim * 2).without_loss()
