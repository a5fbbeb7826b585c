"""How people ask for a land-cover class, and asking for what is not there.

Class-level referents of the land-cover conversion (:mod:`sbanet.data.semantic`) are worded from a
class's noun ("all buildings", "the water"); people type "the houses", "the sea", "the streets",
"the greenery". :data:`DUBAI_PARAPHRASES` and :data:`GID_PARAPHRASES` hold such wordings (at least five per class, the
canonical one first); :func:`reworded` draws one for a class-level referent. :func:`absent_referrings`
asks for classes that have no pixel in a crop, with an empty target mask, so a model learns that
"nothing" is an answer rather than marking whatever looks closest.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import numpy as np

from .expressions import Referring
from .land_cover import LandCoverClass

# Ways people ask for a whole class (at least five each); the first is the canonical wording.
DUBAI_PARAPHRASES = {
    "building": ("all buildings", "the buildings", "the houses", "every building", "the rooftops", "built-up areas"),
    "land": ("the bare land", "the sand", "the desert", "the unpaved ground", "the open land", "bare soil"),
    "road": ("the roads", "all roads", "the streets", "the road network", "the paved roads", "the highways"),
    "vegetation": ("the vegetation", "the trees", "the greenery", "the plants", "the green areas", "the grass"),
    "water": ("the water", "the sea", "the lake", "water bodies", "all the water", "the water surface"),
}

# GID-MTL's classes (sbanet.data.gid), asked as people do; the first is the canonical wording.
GID_PARAPHRASES = {
    # gid5
    "built-up": ("the built-up area", "the town", "the urban area", "the buildings", "the settlement"),
    "farmland": ("the farmland", "the fields", "the cropland", "the farm fields", "the agricultural land"),
    "forest": ("the forest", "the trees", "the woods", "the woodland", "the wooded area"),
    "meadow": ("the grassland", "the meadow", "the grass", "the pasture", "the grassy area"),
    "water": ("the water", "the water bodies", "all the water", "the water surface", "the open water"),
    # gid15
    "industrial": (
        "the industrial area",
        "the factories",
        "the industrial land",
        "the warehouses",
        "the industrial buildings",
    ),
    "residential": ("the houses", "the residential area", "the homes", "the housing", "the residential buildings"),
    "traffic": ("the roads", "the streets", "the road network", "the highways", "all roads"),
    "paddy": ("the paddy fields", "the rice paddies", "the paddies", "the rice fields", "the flooded fields"),
    "cropland": ("the farmland", "the fields", "the cropland", "the crops", "the farm fields"),
    "garden": ("the orchards", "the garden plots", "the plantations", "the orchard", "the gardens"),
    "woodland": ("the forest", "the trees", "the woods", "the woodland", "the wooded area"),
    "shrub": ("the shrubs", "the bushes", "the shrubland", "the scrub", "the brush"),
    "grassland": ("the grassland", "the grass", "the meadow", "the lawns", "the grassy area"),
    "river": ("the river", "the rivers", "the stream", "the canal", "the waterway"),
    "lake": ("the lake", "the lakes", "the reservoir", "the large water body", "the lake water"),
    "pond": ("the pond", "the ponds", "the fish ponds", "the small ponds", "the pool"),
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
    (rule ``absent``). A class whose ``family`` has another class present is not absent."""
    if count <= 0:
        return []
    present = set(np.unique(labels).tolist())
    families = {c.family for i, c in enumerate(classes) if i in present and c.family is not None}
    absent = [
        (i, c)
        for i, c in enumerate(classes)
        if i not in present and c.family not in families and class_phrases(c) and (allowed is None or c.name in allowed)
    ]
    picked = rng.permutation(len(absent))[:count]
    empty = np.zeros(labels.shape, bool)
    out = []
    for k in sorted(picked):
        _, cls = absent[k]
        phrases = class_phrases(cls)
        out.append(Referring(phrases[int(rng.integers(len(phrases)))], empty, cls.name, "absent"))
    return out
