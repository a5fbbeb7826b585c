"""The model computes what the paper writes (Eq. 1-2, Eq. 8-10, LAVT's Swin), and the earlier
readings stay available under their option names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_within_drift

from sbanet import build_preset
from sbanet.build import ABLATION_TABLES, ABLATIONS, PRESET_CONFIGS, build_model
from sbanet.inference.fast import optimize_for_inference
from sbanet.modeling.tcsa import TextConditionedAggregator
from sbanet.modeling.visual_encoder import SwinEncoder


def _inputs(batch: int, size: int, length: int = 9):
    ids = torch.randint(1000, 2000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0
    return torch.randn(batch, 3, size, size), ids, mask


# --- TCSA, Eq. (8)-(10) --------------------------------------------------------------------------
def _tcsa_spatial(order: str, channel_scale: float) -> torch.Tensor:
    torch.manual_seed(0)
    config = PRESET_CONFIGS["sbanet_tiny"](tcsa_order=order)
    tcsa = TextConditionedAggregator(config).eval()
    with torch.no_grad():
        for out in tcsa.channel_out:
            out.weight.mul_(channel_scale)
            out.bias.add_(0.1)
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(2, s, s, c, generator=generator) for s, c in zip((56, 28, 14, 7), config.stage_dims)]
    text = torch.randn(2, 6, config.text_dim, generator=generator)
    with torch.no_grad():
        _, attention = tcsa(features, text, torch.ones(2, 6), need_attention=True)
    return attention["spatial"]


def test_tcsa_spatial_attention_reads_the_channel_branch_output():
    """Eq. (10) as written: scaling the channel branch's output moves the spatial attention."""
    assert (_tcsa_spatial("sequential", 1.0) - _tcsa_spatial("sequential", 5.0)).abs().max() > 1e-3
    # the earlier reading: both branches read the same F_C, so the spatial map cannot move
    torch.testing.assert_close(_tcsa_spatial("parallel", 1.0), _tcsa_spatial("parallel", 5.0))


def test_tcsa_normalises_each_scale_before_pooling():
    config = PRESET_CONFIGS["sbanet_tiny"]()
    tcsa = TextConditionedAggregator(config).eval()
    with torch.no_grad():
        for norm in tcsa.scale_norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    feature = torch.randn(1, 14, 14, config.stage_dims[0])
    seen = {}
    tcsa.channel_q[0].register_forward_hook(lambda m, args, out: seen.setdefault("t1", args[0]))
    features = [feature] + [torch.randn(1, 14 >> i, 14 >> i, c) for i, c in enumerate(config.stage_dims[1:], 1)]
    with torch.no_grad():
        tcsa(features, torch.randn(1, 4, config.text_dim), torch.ones(1, 4))
    grid = tcsa.grid_size(features)
    norm = tcsa.scale_norms[0]
    pooled = F.adaptive_avg_pool2d(norm(feature).permute(0, 3, 1, 2), grid).flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen["t1"], pooled)


# --- BAM, Eq. (1)-(2) -----------------------------------------------------------------------------
def test_query_tokens_are_single_head_layer_normed_and_scaled_by_sqrt_c_i():
    config = PRESET_CONFIGS["sbanet_tiny"]()
    model = build_model(config).eval()
    tokens = model.fusions[2].query_tokens
    c_i = config.stage_dims[2]
    visual = torch.randn(1, 6, 6, c_i)
    with torch.no_grad():
        _, weights, _ = tokens(visual, None, None, need_weights=True)
        queries = tokens.tokens + tokens.pos_embed
        q = tokens.norm_q(tokens.to_q(queries))
        k = tokens.norm_k(tokens.to_k(visual.reshape(1, 36, c_i)))
        expected = torch.softmax(q @ k[0].T / math.sqrt(c_i), dim=-1)
        torch.testing.assert_close(weights.view(1, -1, 36)[0], expected)
        # "projection and normalization": a scaled projection leaves Q/K/V, hence the tokens, unchanged
        before = tokens(visual, None, None)[0]
        for layer in (tokens.to_k, tokens.to_v):
            layer.weight.mul_(7.0)
            layer.bias.mul_(7.0)
        assert_within_drift(tokens(visual, None, None)[0], before, atol=1e-4, rtol=1e-4, check="scaled K/V")
    assert not hasattr(tokens, "proj")  # the paper updates the tokens by MLP + LN only


def test_alignment_has_separate_key_and_value_projections():
    model = build_model(PRESET_CONFIGS["sbanet_tiny"]()).eval()
    alignment = model.fusions[0].alignment
    text, tokens = torch.randn(1, 5, model.config.text_dim), torch.randn(1, 16, model.config.query_dim)
    mask = torch.ones(1, 5)
    with torch.no_grad():
        before, weights = alignment(text, mask, tokens, need_weights=True)
        alignment.proj_value[0].weight.mul_(3.0)  # w_iv only: the values change, the attention not
        after, weights_after = alignment(text, mask, tokens, need_weights=True)
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(weights["alignment"], weights_after["alignment"])
    legacy = build_model(PRESET_CONFIGS["sbanet_tiny"](bam_attention="multihead"))
    assert legacy.fusions[0].alignment.proj_value is None


def test_dfs_projects_the_pooled_branches_only_and_gates_start_like_lavt():
    model = build_model(PRESET_CONFIGS["sbanet_tiny"](embed_dim=64))
    dfs = model.fusions[0].dfs
    assert isinstance(dfs.branch_proj[0], torch.nn.Identity)  # window 1: the micro branch
    assert all(isinstance(p, torch.nn.Sequential) for p in dfs.branch_proj[1:])  # three 1x1 conv + norm
    weights = torch.cat([model.fusions[i].gate.gate[j].weight.flatten() for i in range(3) for j in (0, 2)])
    # trunc_normal(std=0.02), not PyTorch's default (uniform to 1/sqrt(64): std 0.072)
    assert 0.018 < weights.std().item() < 0.022


# --- Swin in LAVT's order -------------------------------------------------------------------------
def reference_pad_then_roll(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An independent, loop-based LAVT shifted-window attention. x ``[1, H, W, C]`` normed.

    Pads to the window multiple, reads the rolled map by index arithmetic, labels the regions
    the way LAVT slices its mask (``[0, Hp - ws)``, ``[Hp - ws, Hp - s)``, ``[Hp - s, Hp)``), and
    attends window by window with the relative position bias looked up from the table.
    """
    _, h, w, c = x.shape
    ws, s = block.window_size[0], block.shift_size[0]
    attn = block.attn
    heads = attn.num_heads
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    padded = torch.zeros(hp, wp, c)
    padded[:h, :w] = x[0]

    def region(i: int, n: int) -> int:
        return 0 if i < n - ws else (1 if i < n - s else 2)

    out = torch.zeros(hp, wp, c)
    table = attn.relative_position_bias_table
    for wr in range(0, hp, ws):
        for wc in range(0, wp, ws):
            cells = [(wr + i, wc + j) for i in range(ws) for j in range(ws)]
            tokens = torch.stack([padded[(r + s) % hp, (q + s) % wp] for r, q in cells])
            labels = torch.tensor([region(r, hp) * 3 + region(q, wp) if s else 0 for r, q in cells])
            qkv = attn.qkv(tokens).view(len(cells), 3, heads, c // heads).permute(1, 2, 0, 3)
            scores = qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(c // heads)
            rel = torch.tensor(
                [
                    [(a // ws - b // ws + ws - 1) * (2 * ws - 1) + (a % ws - b % ws + ws - 1) for b in range(ws * ws)]
                    for a in range(ws * ws)
                ]
            )
            scores = scores + table[rel].permute(2, 0, 1)
            scores = scores + (labels[:, None] != labels[None, :]).float() * -100.0
            mixed = (torch.softmax(scores, dim=-1) @ qkv[2]).transpose(0, 1).reshape(len(cells), c)
            mixed = attn.proj(mixed)
            for (r, q), value in zip(cells, mixed):
                out[(r + s) % hp, (q + s) % wp] = value
    return out[:h, :w][None]


@pytest.mark.numerics
@pytest.mark.parametrize(("size", "window"), [(14, 12), (7, 7), (9, 4)])
def test_swin_block_pads_then_rolls_like_lavt(size, window):
    config = PRESET_CONFIGS["sbanet_tiny"](window_size=window, image_size=size * 32)
    torch.manual_seed(0)
    encoder = SwinEncoder(config).eval()
    block = encoder.layers[3].blocks[0]
    block.shift_size = (window // 2, window // 2)  # a shifted block on the last stage's width
    with torch.no_grad():
        torch.nn.init.normal_(block.attn.relative_position_bias_table, std=0.5)
        x = torch.randn(1, size, size, config.stage_dims[3])
        from sbanet.modeling.visual_encoder import pad_then_roll_attention

        ours = pad_then_roll_attention(block, block.norm1(x))
        assert_within_drift(
            ours, reference_pad_then_roll(block, block.norm1(x)), atol=1e-5, rtol=1e-4, check="LAVT order"
        )
        # timm rolls first and pads after: different wherever the map is not a window multiple
        timm_order = block._attn(block.norm1(x))
    if size % window:
        assert (timm_order - ours).abs().max() > 1e-3


def test_swin_keeps_the_shift_on_maps_no_larger_than_the_window():
    config = PRESET_CONFIGS["sbanet_tiny"](depths=(2, 2, 2, 2))  # 224: stage 4 is 7x7, the window is 7
    lavt, timm_like = SwinEncoder(config), SwinEncoder(config.replace(swin_shift="timm"))
    assert lavt.layers[3].blocks[1].shift_size == (3, 3)
    assert timm_like.layers[3].blocks[1].shift_size == (0, 0)
    # the same weights (timm / ImageNet checkpoints load into either)
    assert {k: v.shape for k, v in lavt.state_dict().items()} == {k: v.shape for k, v in timm_like.state_dict().items()}


@pytest.mark.numerics
@pytest.mark.parametrize("swin_shift", ["lavt", "timm"])
def test_fast_swin_matches_eager_in_both_orders(swin_shift):
    # two blocks per stage: the second is shifted; at 200 the maps 50/25/13/7 all need padding or shift
    model = build_preset("sbanet_tiny", swin_shift=swin_shift, depths=(2, 2, 2, 2)).eval()
    fast = optimize_for_inference(model)
    images, ids, mask = _inputs(1, 200)
    with torch.no_grad():
        assert_within_drift(
            fast(images, ids, mask), model(images, ids, mask), atol=2e-4, rtol=1e-4, check="fast logits"
        )


# --- the ablations ----------------------------------------------------------------------------------
def test_ablation_rows_sit_on_the_paper_bases():
    assert ABLATIONS["lavt+bam"] == dict(bam=True, dfs=True, tcsa=False)  # BAM includes DFS
    # Table IV: the language updates are added to PWAM (line 249), the BAM rows carry DFS
    for key in ("tokens_self_attention", "tokens_cross_attention", "tokens_group_attention"):
        assert ABLATIONS[key]["bam"] and not ABLATIONS[key]["dfs"] and not ABLATIONS[key]["tcsa"]
    for key in ABLATION_TABLES["IV"][4:]:
        assert ABLATIONS[key]["bam"] and ABLATIONS[key]["dfs"] and not ABLATIONS[key]["tcsa"]
    assert ABLATIONS["pwam"] == ABLATIONS["lavt"] == ABLATIONS["tcsa_default"]
    # Table V on LAVT, text guidance only in the last row (line 267)
    for key in ABLATION_TABLES["V"][1:]:
        assert ABLATIONS[key]["tcsa"] and not ABLATIONS[key]["bam"] and not ABLATIONS[key]["dfs"]
        assert ABLATIONS[key].get("tcsa_text", True) == (key == "tcsa_full")
    assert "lavt+dfs" in ABLATION_TABLES["III"]
    pyramid = ABLATIONS["tokens_pyramid"]["num_queries"]
    assert list(pyramid) == sorted(pyramid) == [128, 256, 512, 1024]  # grows with the stage width
    assert all(key in ABLATIONS for rows in ABLATION_TABLES.values() for key in rows)


def test_self_attention_tokens_are_the_words():
    model = build_preset("sbanet_tiny", ablation="tokens_self_attention").eval()
    images, ids, mask = _inputs(2, 64)
    text = model.encode_text(ids, mask)
    tokens, _, token_mask = model.fusions[0].query_tokens(None, text, mask)
    assert tokens.shape[:2] == ids.shape and torch.equal(token_mask, mask.bool())
    group = build_preset("sbanet_tiny", ablation="tokens_group_attention", group_assignment="soft").eval()
    with torch.no_grad():
        _, attention = group(images, ids, mask, return_attention=True)
    assignment = attention["stages"][0]["query"]  # [B, M, h, w]: each group's share of the pixels
    torch.testing.assert_close(assignment.flatten(2).sum(-1), torch.ones(2, group.config.num_queries))


def test_480_config_gives_the_papers_15x15_last_stage():
    from train.fit_config import load_config

    config = load_config("configs/rrsisd_swin_b_480.yaml")
    assert config.model.overrides == {"image_size": 480, "tcsa_grid": 15}
    assert load_config("configs/rrsisd_swin_b.yaml").model.overrides == {}  # the paper's stated 448
    model = build_preset("sbanet_tiny", **config.model.overrides).eval()
    with torch.no_grad():
        x = model.visual_encoder.stem(torch.randn(1, 3, 480, 480))
        for i in range(4):
            x = model.visual_encoder.stage(i, x)
    assert x.shape[1] * x.shape[2] == 225 == model.config.tcsa_grid**2


def test_group_tokens_use_groupvits_hard_assignment():
    """Table IV's group attention (line 265): each pixel goes to exactly one group, one-hot in
    eval; training draws Gumbel noise yet still gives one-hot columns with a gradient."""
    from sbanet.modeling.tokens import hard_group_assignment

    logits = torch.randn(2, 5, 30, requires_grad=True)
    hard = hard_group_assignment(logits, training=False)
    assert torch.equal(hard.sum(1), torch.ones(2, 30)) and torch.equal(hard.argmax(1), logits.argmax(1))
    sampled = hard_group_assignment(logits, training=True)
    assert torch.equal(sampled.sum(1), torch.ones(2, 30)) and set(sampled.unique().tolist()) <= {0.0, 1.0}
    (sampled * torch.randn_like(sampled)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    model = build_preset("sbanet_tiny", ablation="tokens_group_attention").eval()
    assert model.config.group_assignment == "hard"
    images, ids, mask = _inputs(2, 64)
    with torch.no_grad():
        _, attention = model(images, ids, mask, return_attention=True)
    shares = attention["stages"][0]["query"].flatten(2)  # [B, M, hw]: one group per pixel
    assert torch.equal((shares > 0).sum(1), torch.ones_like(shares[:, 0], dtype=torch.long))


def test_new_configs_take_the_papers_forms_and_saved_ones_keep_theirs():
    from sbanet.config import ADDED_FIELD_VALUES, SBANetConfig

    config = PRESET_CONFIGS["sbanet_tiny"]()
    assert config.pwam_activation == "relu" and config.tcsa_reconstruct == "depthwise"
    assert not config.tcsa_ffn and not config.tcsa_concat_norm and config.group_assignment == "hard"
    saved = {k: v for k, v in config.to_dict().items() if k not in ADDED_FIELD_VALUES}
    old = SBANetConfig.from_dict(saved, version=2)
    assert {k: getattr(old, k) for k in ADDED_FIELD_VALUES} == dict(ADDED_FIELD_VALUES)
    assert SBANetConfig.from_dict(config.to_dict(), version=2) == config
    assert isinstance(build_model(config).fusions[0].dfs.branch_pwam[0].project_mm[1], torch.nn.ReLU)
    assert isinstance(build_model(old).fusions[0].dfs.branch_pwam[0].project_mm[1], torch.nn.GELU)
