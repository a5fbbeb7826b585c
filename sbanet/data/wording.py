"""How people ask for a land-cover class, and asking for what is not there.

Class-level referents of the land-cover conversion (:mod:`sbanet.data.semantic`) are worded from a
class's noun ("all buildings", "the water"); people type "the houses", "the sea", "the streets",
"the greenery". :data:`DUBAI_PARAPHRASES` holds such wordings (at least five per class, the
canonical one first); :func:`reworded` draws one for a class-level referent. :func:`absent_referrings`
asks for classes that have no pixel in a crop, with an empty target mask, so a model learns that
"nothing" is an answer rather than marking whatever looks closest.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .expressions import Referring

if TYPE_CHECKING:
    from .semantic import LandCoverClass

# Ways people ask for a whole class (at least five each); the first is the canonical wording.
DUBAI_PARAPHRASES = {
    "building": ("all buildings", "the buildings", "the houses", "every building", "the rooftops", "built-up areas"),
    "land": ("the bare land", "the sand", "the desert", "the unpaved ground", "the open land", "bare soil"),
    "road": ("the roads", "all roads", "the streets", "the road network", "the paved roads", "the highways"),
    "vegetation": ("the vegetation", "the trees", "the greenery", "the plants", "the green areas", "the grass"),
    "water": ("the water", "the sea", "the lake", "water bodies", "all the water", "the water surface"),
}


def class_phrases(cls: LandCoverClass) -> tuple[str, ...]:
    """Every class-level wording of ``cls``: its paraphrases, else the ones its noun gives."""
    if cls.paraphrases:
        return cls.paraphrases
    if cls.noun is None:
        return ()
    noun = cls.noun
    return (f"the {noun.mass}",) if noun.mass else (f"all {noun.plural}", f"the {noun.plural}")


def reworded(referring: Referring, classes: Sequence[LandCoverClass], rng: np.random.Generator) -> Referring:
    """A class-level referent worded with one of its class's paraphrases (others unchanged)."""
    cls = next((c for c in classes if c.name == referring.category), None)
    if referring.rule != "class" or cls is None or not cls.paraphrases:
        return referring
    return replace(referring, expression=cls.paraphrases[int(rng.integers(len(cls.paraphrases)))])


def absent_referrings(
    labels: np.ndarray,
    classes: Sequence[LandCoverClass],
    count: int,
    rng: np.random.Generator,
    allowed: Collection[str] | None = None,
) -> list[Referring]:
    """Up to ``count`` classes with no pixel in ``labels`` ``int16 [H, W]`` (and, given ``allowed``,
    named in it), each asked for with one of its class-level wordings and an all-False target
    (rule ``absent``)."""
    if count <= 0:
        return []
    present = set(np.unique(labels).tolist())
    absent = [
        (i, c)
        for i, c in enumerate(classes)
        if i not in present and class_phrases(c) and (allowed is None or c.name in allowed)
    ]
    picked = rng.permutation(len(absent))[:count]
    empty = np.zeros(labels.shape, bool)
    out = []
    for k in sorted(picked):
        _, cls = absent[k]
        phrases = class_phrases(cls)
        out.append(Referring(phrases[int(rng.integers(len(phrases)))], empty, cls.name, "absent"))
    return out
