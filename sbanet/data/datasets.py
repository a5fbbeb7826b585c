"""One entry point over every dataset reader: ``load_samples(kind, root, split)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbanet.data.synthetic import synthetic_samples as make

from .refsegrs import folder_samples, refsegrs_samples
from .rrsisd import rrsisd_samples
from .sample import ReferringSample
from .splits import check_split_size

Reader = Callable[..., list[ReferringSample]]


def synthetic_samples(root: str | Path | None, split: str, **options: Any) -> list[ReferringSample]:
    """:func:`sbanet.data.synthetic.synthetic_samples`, imported when used (it needs OpenCV)."""

    return make(root, split, **options)


# kind -> reader(root, split, **options); a plain registry dict (segment-anything style)
DATASETS: dict[str, Reader] = {
    "rrsisd": rrsisd_samples,
    "refsegrs": refsegrs_samples,
    "folder": folder_samples,
    "synthetic": synthetic_samples,  # root unused; options n_images, seed, size
}


def load_samples(
    kind: str, root: str | Path | None, split: str, check_size: bool = True, **options: Any
) -> list[ReferringSample]:
    """The samples of one split of a dataset, e.g. ``load_samples("rrsisd", "data", "test")``.

    ``options`` go to the reader (the synthetic one takes ``n_images``, ``size``, ``seed``).
    ``check_size``: compare RRSIS-D / RefSegRS splits with their published sizes and refuse a
    partial download (:func:`sbanet.data.splits.check_split_size`).
    """
    reader = DATASETS.get(kind)
    if reader is None:
        raise ValueError(f"unknown dataset {kind!r}; choose one of {sorted(DATASETS)}")
    if root is None and kind != "synthetic":
        raise ValueError(f"dataset {kind!r} needs a root folder")
    samples = reader(root, split, **options)
    if check_size and root is not None:
        check_split_size(kind, root, split, len(samples))
    return samples
