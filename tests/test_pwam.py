"""PWAM and the language gate: hand-checkable values and equality with LAVT's Conv1d code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_within_drift
from torch import nn

from sbanet.modeling.pwam import PWAM, LanguageGate, PixelWordAttention, instance_norm_tokens


def test_instance_norm_tokens_matches_instancenorm1d():
    x = torch.randn(2, 7, 5)
    expected = nn.InstanceNorm1d(5)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(instance_norm_tokens(x), expected)


def _identity_attention(dim: int) -> PixelWordAttention:
    att = PixelWordAttention(dim, dim, dim, dim, dim)
    for lin in (att.f_query, att.f_key, att.f_value, att.f_out):
        nn.init.eye_(lin.weight)
        nn.init.zeros_(lin.bias)
    return att


def test_pixel_word_attention_hand_values():
    # 2 pixels, 1 channel: after instance norm the queries are -1 and +1.
    # Words: [2.0, 4.0, pad]. Scores q*k/sqrt(1): pixel0 -> [-2, -4], pixel1 -> [2, 4].
    att = _identity_attention(1)
    x = torch.tensor([[[0.0], [10.0]]])
    text = torch.tensor([[[2.0], [4.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    out, attn = att(x, text, mask)
    a0 = torch.tensor([math.exp(-2), math.exp(-4)]) / (math.exp(-2) + math.exp(-4))
    a1 = torch.tensor([math.exp(2), math.exp(4)]) / (math.exp(2) + math.exp(4))
    torch.testing.assert_close(attn[0, 0], torch.cat([a0, torch.zeros(1)]))
    torch.testing.assert_close(attn[0, 1], torch.cat([a1, torch.zeros(1)]))
    # attended values, then instance norm over the two pixels -> -1, +1 (v0 < v1)
    v = torch.stack([a0 @ torch.tensor([2.0, 4.0]), a1 @ torch.tensor([2.0, 4.0])])
    assert v[0] < v[1]
    torch.testing.assert_close(out[0, :, 0], torch.tensor([-1.0, 1.0]), atol=1e-4, rtol=0)


def test_pwam_hand_values_and_gate():
    pwam = PWAM(1, 1)
    for lin in (pwam.vis_project[0], pwam.project_mm[0]):
        nn.init.eye_(lin.weight)
        nn.init.zeros_(lin.bias)
    pwam.attention = _identity_attention(1)
    x = torch.tensor([[[0.0], [10.0]]])
    text = torch.tensor([[[2.0], [4.0]]])
    mm, _ = pwam(x, text, torch.tensor([[1, 1]]))
    gelu = F.gelu
    expected = gelu(gelu(x) * torch.tensor([[[-1.0], [1.0]]]))
    torch.testing.assert_close(mm, expected, atol=1e-4, rtol=0)

    gate = LanguageGate(1)
    nn.init.ones_(gate.gate[0].weight)
    nn.init.ones_(gate.gate[2].weight)
    y = gate(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    torch.testing.assert_close(y, torch.tensor([[1.0 + math.tanh(2.0) * 2.0]]))


class LAVTSpatialImageLanguageAttention(nn.Module):
    """LAVT's code (lib/backbone.py), num_heads = 1, kept here as the reference."""

    def __init__(self, v_in, l_in, key_channels, value_channels, out_channels):
        super().__init__()
        self.key_channels = key_channels
        self.f_key = nn.Sequential(nn.Conv1d(l_in, key_channels, 1))
        self.f_query = nn.Sequential(nn.Conv1d(v_in, key_channels, 1), nn.InstanceNorm1d(key_channels))
        self.f_value = nn.Sequential(nn.Conv1d(l_in, value_channels, 1))
        self.W = nn.Sequential(nn.Conv1d(value_channels, out_channels, 1), nn.InstanceNorm1d(out_channels))

    def forward(self, x, l, l_mask):  # noqa: E741 (LAVT names)  # x (B, HW, C), l (B, C_l, N_l), l_mask (B, N_l, 1)
        x = x.permute(0, 2, 1)
        l_mask = l_mask.permute(0, 2, 1)
        query = self.f_query(x).permute(0, 2, 1)
        key = self.f_key(l) * l_mask
        value = self.f_value(l) * l_mask
        sim = torch.matmul(query, key) * self.key_channels**-0.5
        sim = sim + (1e4 * l_mask - 1e4)
        sim = F.softmax(sim, dim=-1)
        out = torch.matmul(sim, value.permute(0, 2, 1)).permute(0, 2, 1)
        return self.W(out).permute(0, 2, 1)


class LAVTPWAM(nn.Module):
    def __init__(self, dim, l_in):
        super().__init__()
        self.vis_project = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU())
        self.image_lang_att = LAVTSpatialImageLanguageAttention(dim, l_in, dim, dim, dim)
        self.project_mm = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU())

    def forward(self, x, l, l_mask):  # noqa: E741 (LAVT names)
        vis = self.vis_project(x.permute(0, 2, 1))
        lang = self.image_lang_att(x, l, l_mask).permute(0, 2, 1)
        return self.project_mm(vis * lang).permute(0, 2, 1)


def _copy(linear: nn.Linear, conv: nn.Conv1d) -> None:
    conv.weight.data.copy_(linear.weight.data.unsqueeze(-1))
    conv.bias.data.copy_(linear.bias.data)


@pytest.mark.numerics
def test_pwam_equals_lavt_reference():
    dim, l_in = 8, 6
    ours = PWAM(dim, l_in)
    ref = LAVTPWAM(dim, l_in)
    _copy(ours.vis_project[0], ref.vis_project[0])
    _copy(ours.project_mm[0], ref.project_mm[0])
    _copy(ours.attention.f_query, ref.image_lang_att.f_query[0])
    _copy(ours.attention.f_key, ref.image_lang_att.f_key[0])
    _copy(ours.attention.f_value, ref.image_lang_att.f_value[0])
    _copy(ours.attention.f_out, ref.image_lang_att.W[0])
    x = torch.randn(2, 3, 4, dim)
    text = torch.randn(2, 5, l_in)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mm, attn = ours(x, text, mask)
    expected = ref(x.reshape(2, 12, dim), text.transpose(1, 2), mask.unsqueeze(-1).float())
    assert_within_drift(mm.reshape(2, 12, dim), expected, atol=1e-5, rtol=1e-5, check="LAVT PWAM")
    assert attn.shape == (2, 3, 4, 5)
    assert torch.all(attn[0, ..., 3:] == 0)
