"""The published split sizes of RRSIS-D and RefSegRS, and the check that catches a partial
download before a run trains or scores on it.

Sizes are samples (image, expression, mask): RRSIS-D 12,181 / 1,740 / 3,481 (17,402, Liu et
al., RMSIN, CVPR 2024), RefSegRS 2,172 / 431 / 1,817 (4,420, Yuan et al., RRSIS, TGRS 2024).

:func:`check_split_size` compares three numbers: the published size, the samples the annotation
files list for the split, and the samples whose files could actually be read.

* Annotation files listing another number: not the published dataset (a subset, an export of
  your own annotations in the same layout). A warning says results are not comparable with the
  paper's; nothing is refused.
* The published annotations, but more than ``max_missing`` (1 %) of their samples lacking an
  image or mask file: a partial download. ``ValueError``, unless the check is switched off.
* Up to 1 % missing: a warning (a few files are reported missing from the public downloads).

``load_samples(..., check_size=False)`` (``data.options={check_size: false}`` in a fit config,
``--option check_size=false`` for ``train.evaluate``) switches the check off.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .refsegrs import phrase_file, read_phrases
from .rrsisd import REFS_FILE, load_refs

log = logging.getLogger(__name__)

PUBLISHED_SIZES: dict[str, dict[str, int]] = {
    "rrsisd": {"train": 12181, "val": 1740, "test": 3481},
    "refsegrs": {"train": 2172, "val": 431, "test": 1817},
}
NAMES = {"rrsisd": "RRSIS-D", "refsegrs": "RefSegRS"}
OPT_OUT = "check_size=false (train.fit: data.options={check_size: false}; train.evaluate: --option check_size=false)"


def annotated_count(kind: str, root: str | Path, split: str) -> int:
    """Samples the annotation files list for ``split``, whether or not their files exist."""
    if kind == "rrsisd":
        return sum(len(ref["sentences"]) for ref in load_refs(Path(root) / REFS_FILE) if ref["split"] == split)
    return len(read_phrases(phrase_file(root, split)))


def check_split_size(
    kind: str,
    root: str | Path,
    split: str,
    loaded: int,
    published: dict[str, dict[str, int]] | None = None,
    max_missing: float = 0.01,
) -> None:
    """Refuse a published split that lost more than ``max_missing`` of its samples; warn about
    smaller losses and about annotation files that are not the published ones."""
    expected = (PUBLISHED_SIZES if published is None else published).get(kind, {}).get(split)
    if expected is None:
        return
    name, annotated = NAMES.get(kind, kind), annotated_count(kind, root, split)
    if annotated != expected:
        log.warning(
            "%s %s at %s lists %d samples, the published split %d: not the published dataset, so its "
            "numbers are not comparable with the paper's (%s silences this)",
            name, split, root, annotated, expected, OPT_OUT,
        )  # fmt: skip
        return
    missing = expected - loaded
    if missing <= 0:
        return
    text = (
        f"{name} {split} at {root}: {loaded:,} of the published {expected:,} samples could be read "
        f"({missing:,} lack their image or mask file)"
    )
    if missing > max_missing * expected:
        raise ValueError(f"{text}: a partial download? Complete it, or pass {OPT_OUT} to use it as it is")
    log.warning("%s; within %.0f%%, so the run goes on", text, 100 * max_missing)
