"""The paper's transforms and a ``torch`` dataset over :class:`ReferringSample` lists.

As LAVT / SBANet: a square resize to the input size (bilinear, antialiased like PIL, for the
image; PIL's nearest for the mask, bit for bit), ImageNet normalisation, and no flips or
rotations (expressions name locations: a flip would turn "the building on the left" into a wrong
label). ``augment=True`` (training only, not the paper's recipe) draws one of the eight flips and
quarter turns per item and turns the expression's direction words with it (:mod:`.augment`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..image import to_rgb8
from ..modeling.text_encoder import tokenize
from .augment import TRANSFORMS, turn_tensor, turn_words
from .photometric import photometric
from .rescale import SCALE_RULES, check_scale_range, draw_factor, rescale
from .sample import ReferringSample

TOKENIZE_CHUNK = 4096


def resize_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """``[H, W, 3] uint8`` -> ``float32 [3, S, S]`` in [0, 1], bilinear with antialiasing."""
    x = torch.from_numpy(np.require(rgb, requirements=("C", "W"))).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """``[..., 3, H, W]`` in [0, 1] -> ``(x - mean) / std`` per channel."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """``bool [H, W]`` -> ``int64 [S, S]`` in {0, 1} by PIL's ``NEAREST``, as the reference resizes
    its targets (torchvision on a PIL image). PIL steps through the source in floating point, so
    where a pixel centre falls exactly between two source pixels (e.g. 28 of 448 rows at
    512 -> 448) it picks otherwise than torch's ``nearest-exact``: PIL itself decides here."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    return torch.from_numpy(np.array(image.resize((size, size), Image.Resampling.NEAREST))).long()


class ReferringDataset(Dataset):
    """Samples -> model inputs. Item ``i`` is a dict:

    * ``image``: ``float32 [3, S, S]``, normalised; ``mask``: ``int64 [S, S]`` in {0, 1};
    * ``input_ids``, ``attention_mask``: ``int64 [max_tokens]`` (padded to ``max_tokens``, LAVT);
    * ``index``: ``i``, to fetch ``samples[i]`` (original-size mask, category) at evaluation.

    ``augment``: each item drawn through one of the eight flips / quarter turns of the square
    (torch's global RNG), its expression's directions turned to match (tokenised once per
    transform here). ``photometric``: each item's colours, exposure, sharpness and encoding
    changed at random (:func:`sbanet.data.photometric.photometric`), the mask and words kept.
    ``scale``: ``(low, high)``: each item whose converter rule keeps its truth under a crop or a
    mirror (a class or an absent class, :data:`sbanet.data.rescale.SCALE_RULES`) seen closer or
    farther by a factor log-uniform in that range (:func:`sbanet.data.rescale.rescale`).

    Expressions are tokenised once here. Resized images are kept in a small per-process LRU
    cache keyed by ``image_id`` (the sentences of one image are decoded once when they come
    close together, as at evaluation); each DataLoader worker has its own copy, so no state is
    shared between processes.
    """

    def __init__(
        self,
        samples: Sequence[ReferringSample],
        image_size: int,
        tokenizer: Any,
        max_tokens: int = 20,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        cache_size: int = 8,
        augment: bool = False,
        photometric: bool = False,
        scale: tuple[float, float] | None = None,
    ) -> None:
        if image_size < 1 or max_tokens < 3:
            raise ValueError(f"image_size must be >= 1 and max_tokens >= 3, got {image_size}, {max_tokens}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.max_tokens = int(max_tokens)
        self.mean, self.std = tuple(mean), tuple(std)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.transforms = TRANSFORMS if augment else TRANSFORMS[:1]
        self.photometric = bool(photometric)
        self.scale = check_scale_range(scale)
        # [T, N, max_tokens]: the tokens of every expression under each transform (0: as written)
        texts = [s.expression for s in self.samples]
        tokens = [self._tokenize(tokenizer, [turn_words(text, *t) for text in texts]) for t in self.transforms]
        self.turned_ids = torch.stack([ids for ids, _ in tokens])
        self.turned_attention = torch.stack([mask for _, mask in tokens])
        self.input_ids, self.attention_mask = self.turned_ids[0], self.turned_attention[0]  # [N, max_tokens]

    def _tokenize(self, tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, attention = [], []
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk_ids, chunk_mask = tokenize(tokenizer, texts[start : start + TOKENIZE_CHUNK], self.max_tokens)
            ids.append(chunk_ids)
            attention.append(chunk_mask)
        empty = torch.zeros(0, self.max_tokens, dtype=torch.long)
        return (torch.cat(ids).long() if ids else empty), (torch.cat(attention).long() if attention else empty)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, sample: ReferringSample) -> torch.Tensor:
        """The normalised ``float32 [3, S, S]`` image of ``sample`` (cached by ``image_id``: the
        same tensor is returned for every sentence of the image, so treat it as read-only)."""
        with self._lock:
            cached = self._cache.get(sample.image_id)
            if cached is not None:
                self._cache.move_to_end(sample.image_id)
                return cached
        image = normalize(resize_image(to_rgb8(sample.load_image()), self.image_size), self.mean, self.std)
        if self.cache_size:
            with self._lock:
                self._cache[sample.image_id] = image
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return image

    def base_item(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` as given (no flip, turn or photometric change): ``image`` ``[3, S, S]``
        (the cached tensor: read-only) and ``mask`` ``int64 [S, S]``."""
        sample = self.samples[index]
        mask = np.asarray(sample.load_mask())
        if mask.ndim != 2:
            raise ValueError(f"{sample.sample_id}: the mask must be 2-D, got shape {mask.shape}")
        return {"image": self.image(sample), "mask": resize_mask(mask.astype(bool, copy=False), self.image_size)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        item = self.base_item(index)
        image, target = item["image"], item["mask"]
        if self.scale is not None and self.samples[index].rule in SCALE_RULES:
            image, target = rescale(image, target, draw_factor(*self.scale))
        t = int(torch.randint(len(self.transforms), ())) if len(self.transforms) > 1 else 0
        if t:
            image, target = turn_tensor(image, *self.transforms[t]), turn_tensor(target, *self.transforms[t])
        if self.photometric:
            image = photometric(image, self.mean, self.std)
        return {
            "image": image,
            "mask": target,
            "input_ids": self.turned_ids[t, index],
            "attention_mask": self.turned_attention[t, index],
            "index": index,
        }
