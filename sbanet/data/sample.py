"""The one sample type every dataset reader yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ReferringSample:
    """One expression referring to one region of one image.

    ``load_image`` returns the image as ``[H, W, C]`` (any dtype/band count, see
    :func:`sbanet.image.to_rgb8`); ``load_mask`` returns the target as ``bool [H, W]`` at the
    image's size. Both are called lazily so a dataset of thousands of samples costs no memory.
    """

    sample_id: str  # unique within its dataset, e.g. "rrsisd/ref-1234/sent-5678"
    image_id: str  # samples sharing an image share this id
    expression: str
    split: str  # "train" | "val" | "test"
    load_image: Callable[[], np.ndarray] = field(repr=False, compare=False)
    load_mask: Callable[[], np.ndarray] = field(repr=False, compare=False)
    category: str | None = None
    ref_id: str | None = None  # RRSIS-D: sentences of one ref share the ref (and its mask)
    rule: str | None = None  # the converter rule that wrote it ("class", "absent", "extreme", ...), if known
