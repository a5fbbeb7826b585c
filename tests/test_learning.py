"""Real weights and real learning: the EfficientNet-Lite0 mapping classifies a real photo, and
the tiny model overfits a few samples whose answer depends on the words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbanet import sbanet_tiny
from sbanet.config import IMAGENET_MEAN, IMAGENET_STD
from sbanet.modeling.text_encoder import tokenize
from sbanet.modeling.visual_encoder import efficientnet_lite0_classifier
from sbanet.training.engine import recalibrate_batchnorm


def _imagenet_tensor(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize(("name", "classes"), [("chelsea", {281, 282, 285}), ("coffee", {967, 968})])
@torch.no_grad()
def test_efficientnet_lite0_wheel_weights_classify_real_photos(name, classes):
    """scikit-image's cat photo is a tabby/tiger/Egyptian cat (281/282/285); its coffee is an
    espresso or a cup (967/968). Wrongly mapped weights give noise."""
    from skimage import data

    model = efficientnet_lite0_classifier(pretrained=True).eval()
    probs = model(_imagenet_tensor(getattr(data, name)())).softmax(-1)[0]
    assert int(probs.argmax()) in classes
    assert float(probs[list(classes)].sum()) > 0.5


def _scene(rng: np.random.Generator, size: int = 64):
    """A grey field with a red square and a blue disc that never overlap."""
    image = np.full((size, size, 3), 110, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    left = rng.random() < 0.5
    sx = rng.integers(4, 16) if left else rng.integers(36, 48)
    sy = rng.integers(4, 44)
    square = (yy >= sy) & (yy < sy + 16) & (xx >= sx) & (xx < sx + 16)
    cx = rng.integers(44, 56) if left else rng.integers(8, 20)
    cy = rng.integers(10, 54)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 8**2
    image[square] = (200, 30, 30)
    image[disc] = (30, 40, 200)
    return image, {"the red square": square, "the blue circle": disc}


def test_tiny_model_overfits_four_samples_quickly(tokenizer):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, texts, masks = [], [], []
    for _ in range(2):
        image, refs = _scene(rng)
        for text, mask in refs.items():
            images.append(image)
            texts.append(text)
            masks.append(mask)
    model = sbanet_tiny(image_size=64).train()
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    y = torch.from_numpy(np.stack(masks)).long()
    ids, attn = tokenize(tokenizer, texts, max_tokens=20)
    steps = 150
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (1 - s / steps) ** 0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.loss(model(x, ids, attn), y)
        loss.backward()
        optimizer.step()
        schedule.step()
    # BatchNorm running averages lag behind weights this fresh; recompute them exactly.
    recalibrate_batchnorm(model, [None], lambda m, _: m(x, ids, attn))
    with torch.no_grad():
        pred = model(x, ids, attn).argmax(1).bool()
    target = y.bool()
    iou = (pred & target).sum((1, 2)).float() / (pred | target).sum((1, 2)).float()
    # "within a minute" is a step budget (150 steps of batch 4 at 64 px: ~30 s on one quiet core),
    # not a wall-clock assert: shared CI machines are too noisy for timed tests.
    assert iou.min() > 0.9, f"IoU per sample {iou.tolist()}, loss {loss.item():.4f}"
