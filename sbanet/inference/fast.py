"""The inference fast path: the same network, computed with less work (eval mode only).

:func:`optimize_for_inference` composes a second :class:`SBANet` from the *same* modules and
parameters as the model it is given (same state-dict keys and tensors), swapping the visual
encoder and the decoder for faster equivalents. What they derive from the weights (folded
convolutions, a folded EfficientNet, an int8 copy) is rebuilt whenever the weights change.
Outputs agree with the eager model to float rounding (tests compare them), except with the
optional int8 linears; the profile that motivates each part is in ``docs/benchmarks.md``.

The model code itself also got exact speed-ups that training shares (DFS's selection layer per
branch before upsampling, TCSA's reconstruction on the pooled grid in eval mode).

* :class:`FastSwinEncoder`: timm's Swin block pads the feature map to a multiple of the window
  *before* its ``qkv`` and ``proj`` linears, so at 448x448 (window 12) stage 3 (28x28 -> 36x36)
  and stage 4 (14x14 -> 24x24) spend 65% and 190% more on those linears than the real tokens
  need, and roll / pad / partition / reverse / slice / roll cost six full copies per block.
  Here ``qkv`` runs on the real tokens only (a zero-padded token's ``qkv`` is the bias, so
  padding rows are filled with it: exact), one ``index_select`` does roll + pad + partition,
  one does reverse + slice + roll, and ``proj`` runs after it on the real tokens.
* :class:`FastEfficientNetEncoder`: EfficientNet-Lite0 with its BatchNorms folded into the
  convolutions, in channels-last memory order (oneDNN's native layout).
* :class:`FoldedDecoder`: LAVT's decoder (48% of SBANet-Swin-B's FLOPs, 3x3 convolutions at
  1/4 and 1/8 resolution) with each BatchNorm folded into its convolution and, on CPUs, the
  large 3x3 convolutions run by NNPACK's Winograd kernels, one image at a time (2.5-3.5x
  faster than oneDNN's direct convolution measured on an AVX2-only Zen 3, where oneDNN has no
  Winograd; NNPACK's batched path is slower, hence one image at a time).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import threading
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sbanet.inference.runtime import DerivedCache
from sbanet.modeling.decoder import SimpleDecoder
from sbanet.modeling.sbanet import SBANet
from sbanet.modeling.visual_encoder import EfficientNetLiteEncoder, SwinEncoder

# NNPACK pays off on large maps; below this many pixels oneDNN's direct convolution wins.
NNPACK_MIN_PIXELS = 56 * 56


@functools.lru_cache(maxsize=1)
def nnpack_ready() -> bool:
    """True when this PyTorch build has NNPACK and it initialises on this CPU."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast is running in on ``device_type`` here, or None where it is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


# --- Swin ------------------------------------------------------------------------------------
class WindowLayout(NamedTuple):
    """Index maps between a ``[h, w]`` token grid and one block's shifted, padded windows."""

    gather: torch.Tensor  # [nW * N]: source token of each window slot (pad slots -> 0)
    pad_slots: torch.Tensor | None  # [P]: window slots that hold padding, None without padding
    scatter: torch.Tensor  # [h * w]: window slot of each token
    mask: torch.Tensor | None  # [nW, N, N] shifted-window attention mask (0 / -100), or None
    windows: int  # nW


def window_layout(block: nn.Module, h: int, w: int, device: torch.device, pad_first: bool = False) -> WindowLayout:
    """The layout timm's ``SwinTransformerBlock._attn`` builds from roll, pad and partition, or
    with ``pad_first`` the one LAVT's block builds from pad, roll and partition."""
    (wh, ww), (sh, sw) = block.window_size, block.shift_size
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    rows, cols = torch.arange(hp), torch.arange(wp)
    # torch.roll(x, -s)[r] == x[(r + s) % n], n the rolled size: the padded one when padding first
    if pad_first:
        r, q = (rows[:, None] + sh) % hp, (cols[None, :] + sw) % wp
        source, is_pad = r * w + q, (r >= h) | (q >= w)
    else:  # padding appended after the roll
        source = ((rows[:, None] + sh) % h) * w + (cols[None, :] + sw) % w
        is_pad = (rows[:, None] >= h) | (cols[None, :] >= w)
    to_windows = lambda t: t.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1)  # noqa: E731
    gather, pad = to_windows(source.masked_fill(is_pad, 0)), to_windows(is_pad)
    slots = torch.empty(h * w, dtype=torch.long)
    slots[gather[~pad]] = torch.arange(hp * wp)[~pad]
    mask = None
    if any(block.shift_size):
        mask = block.get_attn_mask(torch.empty(1, hp, wp, 1, device=device))
    pad_slots = pad.nonzero().flatten().to(device) if bool(pad.any()) else None
    return WindowLayout(gather.to(device), pad_slots, slots.to(device), mask, (hp // wh) * (wp // ww))


def swin_block_forward(block: nn.Module, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """timm ``SwinTransformerBlock.forward`` in eval mode without work on padding. ``[B, h, w, C]``."""
    b, h, w, c = x.shape
    attn = block.attn
    n, heads = attn.window_area, attn.num_heads
    qkv = attn.qkv(block.norm1(x)).view(b, h * w, -1)
    windows = torch.index_select(qkv, 1, layout.gather)  # roll + pad + partition [B, nW*N, 3C]
    if layout.pad_slots is not None:
        bias = attn.qkv.bias() if callable(attn.qkv.bias) else attn.qkv.bias  # int8 linears: a method
        windows[:, layout.pad_slots] = 0.0 if bias is None else bias.to(windows.dtype)
    q, k, v = windows.view(b * layout.windows, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    with torch.autocast(x.device.type, enabled=False):  # logits and softmax in fp32 under bf16 / fp16
        scores = (q.float() * attn.scale) @ k.float().transpose(-2, -1) + attn._get_rel_pos_bias().float()
        if layout.mask is not None:  # scores [B*nW, heads, N, N]
            scores = scores.view(b, layout.windows, heads, n, n) + layout.mask.float()[None, :, None]
            scores = scores.view(-1, heads, n, n)
        weights = torch.softmax(scores, dim=-1).to(v.dtype)
    out = (weights @ v).transpose(1, 2).reshape(b, layout.windows * n, -1)
    out = torch.index_select(out, 1, layout.scatter)  # reverse + slice + roll back [B, h*w, C]
    x = x + attn.proj(out).view(b, h, w, c)
    return x + block.mlp(block.norm2(x))


def quantized_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers are dynamically quantized to int8 (fbgemm
    on x86: weights per output channel, activations per tensor at run time). CPU only."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(module), {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


class FastSwinEncoder(SwinEncoder):
    """A :class:`SwinEncoder`'s own modules (same state-dict keys), run by
    :func:`swin_block_forward` in eval mode.

    ``quantize``: the blocks' linear layers (qkv, proj, MLP, patch merging; ~95% of the
    encoder's FLOPs) run in int8 from a quantized copy, rebuilt when the weights change.
    """

    def __init__(self, encoder: SwinEncoder, quantize: bool = False) -> None:
        nn.Module.__init__(self)  # share the encoder's modules instead of building new ones
        self.stage_dims = encoder.stage_dims
        self.patch_embed = encoder.patch_embed
        self.layers = encoder.layers
        self.pad_first = encoder.pad_first
        self.int8_layers = DerivedCache(encoder.layers, quantized_copy) if quantize else None
        self._layouts: dict[tuple[int, int, int, torch.device], WindowLayout] = {}
        self._lock = threading.Lock()

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``index``: ``[B, h, w, C] -> [B, h', w', C_i]`` (the eager forward in training)."""
        layer = self.layers[index]
        if layer.training:  # the shared module's mode decides, not this wrapper's
            return SwinEncoder.stage(self, index, x)
        int8 = self.int8_layers is not None and x.device.type == "cpu"
        # int8 linears take fp32 activations only: under bf16 autocast their stages run in fp32
        context = torch.autocast("cpu", enabled=False) if int8 else contextlib.nullcontext()
        with context:
            if int8:
                layer, x = self.int8_layers.get()[index], x.float()
            x = layer.downsample(x)
            for j, block in enumerate(layer.blocks):
                x = swin_block_forward(block, x, self._layout(index, j, block, x))
        return x

    def _layout(self, stage: int, j: int, block: nn.Module, x: torch.Tensor) -> WindowLayout:
        key = (stage, j, x.shape[1], x.shape[2], x.device)
        with self._lock:
            if key not in self._layouts:
                self._layouts[key] = window_layout(block, x.shape[1], x.shape[2], x.device, self.pad_first)
            return self._layouts[key]


# --- decoder ---------------------------------------------------------------------------------
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn(conv(x)) == conv'(x)`` in eval mode: the folded weight ``[O, I, k, k]`` and bias ``[O]``."""
    with torch.no_grad():
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        return (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(), bias.contiguous()


def conv3x3_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(conv3x3(x, padding=1))`` ``[B, I, H, W] -> [B, O, H, W]``, by NNPACK on large CPU maps."""
    use_nnpack = (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape[-2] * x.shape[-1] >= NNPACK_MIN_PIXELS
        and nnpack_ready()
    )
    if use_nnpack:  # one image at a time: NNPACK's batched path is slower than oneDNN
        x = x.contiguous()
        out = [torch._nnpack_spatial_convolution(x[i : i + 1], weight, bias, [1, 1]) for i in range(x.shape[0])]
        return (out[0] if len(out) == 1 else torch.cat(out)).relu_()
    return F.relu(F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1), inplace=True)


class FoldedDecoder(SimpleDecoder):
    """A :class:`SimpleDecoder`'s own modules (same state-dict keys) with the BatchNorms folded
    into the convolutions in eval mode; training runs the plain forward.

    The folded weights are rebuilt whenever the decoder's weights change in place.
    """

    def __init__(self, decoder: SimpleDecoder) -> None:
        nn.Module.__init__(self)  # share the decoder's modules instead of building new ones
        self.fuse4, self.fuse3, self.fuse2 = decoder.fuse4, decoder.fuse3, decoder.fuse2
        self.classifier = decoder.classifier
        self._folded = DerivedCache(self, self._fold)
        self._folded_bf16 = DerivedCache(self, self._fold_bf16)

    @staticmethod
    def _fold(decoder: SimpleDecoder) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        stages = (decoder.fuse4, decoder.fuse3, decoder.fuse2)
        return [[fold_batchnorm(cbr[0], cbr[1]) for cbr in stage] for stage in stages]

    @staticmethod
    def _fold_bf16(decoder: SimpleDecoder) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        return [[(w.bfloat16(), b.bfloat16()) for w, b in convs] for convs in FoldedDecoder._fold(decoder)]

    def folded(self, dtype: torch.dtype = torch.float32) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per fuse stage (4, 3, 2), its two folded ``(weight, bias)`` pairs, in fp32 or bf16."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"folded decoder weights come in float32 or bfloat16, not {dtype}")
        return (self._folded_bf16 if dtype == torch.bfloat16 else self._folded).get()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: 4 maps ``[B, C_i, H_i, W_i]`` (strides 4..32) -> logits ``[B, 2, H_1, W_1]``."""
        if self.fuse4.training:  # the shared modules' mode decides, not this wrapper's
            return super().forward(features)
        c1, c2, c3, c4 = features
        x = c4
        # Under CPU bf16 autocast the convolutions run in bf16 by oneDNN with weights folded and
        # cast once (NNPACK computes fp32 only: on an AVX-512 BF16 EPYC the fp32 NNPACK decoder
        # took 0.35 s, oneDNN's bf16 one 0.26 s; docs/benchmarks.md, "bf16 against LAVT").
        cpu_bf16 = x.device.type == "cpu" and autocast_dtype("cpu") == torch.bfloat16
        for skip, convs in zip((c3, c2, c1), self.folded(torch.bfloat16 if cpu_bf16 else torch.float32)):
            x = SimpleDecoder._up_cat(x, skip)  # upsampling runs in fp32 under CPU autocast
            if cpu_bf16:
                x = x.to(torch.bfloat16)
            for weight, bias in convs:
                x = conv3x3_relu(x, weight, bias)
        # the classifier (and so the caller's upsampling of its logits) in fp32 under bf16 / fp16:
        # the 0.5 threshold reads the logits' difference, which bf16's 8 bits blur at mask borders
        with torch.autocast(x.device.type, enabled=False):
            return self.classifier(x.float())


# --- EfficientNet ----------------------------------------------------------------------------
def _without_batchnorm(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of a (timm ``BatchNormAct2d``) BatchNorm once folded: its dropout and activation."""
    return nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))


def folded_efficientnet(encoder: EfficientNetLiteEncoder) -> EfficientNetLiteEncoder:
    """A copy of ``encoder`` (eval mode) with every BatchNorm folded into the convolution before it,
    its weights in channels-last order (oneDNN's native layout: no reorder around each conv)."""
    folded = copy.deepcopy(encoder).eval()
    pairs = [(folded, "conv_stem", "bn1")]
    # timm's blocks or sbanet.modeling.plain_efficientnet's (same names): told apart by their parts
    for block in folded.modules():
        if hasattr(block, "conv_pwl"):  # InvertedResidual
            pairs += [(block, "conv_pw", "bn1"), (block, "conv_dw", "bn2"), (block, "conv_pwl", "bn3")]
        elif hasattr(block, "conv_dw") and hasattr(block, "conv_pw"):  # DepthwiseSeparableConv
            pairs += [(block, "conv_dw", "bn1"), (block, "conv_pw", "bn2")]
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        weight, bias = fold_batchnorm(conv, bn)
        conv.weight, conv.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
        setattr(parent, bn_name, _without_batchnorm(bn))
    return folded.to(memory_format=torch.channels_last)


class FastEfficientNetEncoder(EfficientNetLiteEncoder):
    """An :class:`EfficientNetLiteEncoder`'s own modules (same state-dict keys); in eval mode it
    runs a BatchNorm-folded, channels-last copy, rebuilt when the weights change (the depthwise
    blocks at 1/2 and 1/4 resolution are memory-bound: every pass saved counts).

    The weight check (:func:`~sbanet.inference.runtime.weights_signature`, about 3.6 ms over the
    encoder's 221 modules on a 2-core EPYC) runs once per image batch: :meth:`stem` picks the
    folded copy and the stages that follow in the same thread reuse it up to the last one (a
    16 Mpx scene made 360 checks, 1.1 s, one per stage and tile). A stage called with none held
    (e.g. the correction heads' second pass over a kept prefix) checks and holds in turn.
    """

    def __init__(self, encoder: EfficientNetLiteEncoder) -> None:
        nn.Module.__init__(self)  # share the encoder's modules instead of building new ones
        self.stage_dims = encoder.stage_dims
        self.conv_stem, self.bn1, self.stages = encoder.conv_stem, encoder.bn1, encoder.stages
        self.folded = DerivedCache(encoder, folded_efficientnet)
        self._held = threading.local()  # the folded copy picked by this thread's last stem

    def _runner(self, hold: bool = False, release: bool = False) -> EfficientNetLiteEncoder:
        """The module to run: the plain one in training mode, else the folded copy, checked
        against the weights when ``hold`` (a stem) or when none is held, kept until ``release``."""
        if self.bn1.training:  # the shared modules' mode decides, as in the plain forward
            self._held.runner = None
            return super()  # type: ignore[return-value]
        held = None if hold else getattr(self._held, "runner", None)
        runner = held if held is not None else self.folded.get()
        self._held.runner = None if release else runner
        return runner

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` -> ``[B, H/2, W/2, 32]`` (channels-last memory from here on)."""
        if not self.bn1.training:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._runner(hold=True).stem(images)

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``[B, h, w, C] -> [B, h', w', C_i]``."""
        return self._runner(release=index == len(self.stages) - 1).stage(index, x)


# --- the composed fast model -----------------------------------------------------------------
def optimize_for_inference(model: SBANet, quantize: bool = False) -> SBANet:
    """An :class:`SBANet` sharing ``model``'s modules and weights, with the visual encoder and the
    decoder replaced by :class:`FastSwinEncoder` / :class:`FastEfficientNetEncoder` and
    :class:`FoldedDecoder`.

    The fast parts run while the shared modules are in eval mode (``model.eval()``); in training
    mode they run the original forward. Weight updates to ``model`` show up in the result (the
    folded decoder refolds itself). ``quantize``: run the Swin blocks' linear layers in int8
    on CPUs (see :class:`FastSwinEncoder`; outputs then agree to quantization error, not to
    float rounding).
    """
    visual = model.visual_encoder
    if type(visual) is SwinEncoder:
        visual = FastSwinEncoder(visual, quantize)
    elif type(visual) is EfficientNetLiteEncoder:
        visual = FastEfficientNetEncoder(visual)
    decoder = model.decoder
    if type(decoder) is SimpleDecoder:
        decoder = FoldedDecoder(decoder)
    fast = SBANet(model.config, visual, model.text_encoder, model.fusions, model.tcsa, decoder, model.correction)
    fast.stage_norms = model.stage_norms  # share, not the fresh ones SBANet.__init__ made
    return fast
