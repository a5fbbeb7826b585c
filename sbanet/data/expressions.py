"""Referring expressions that are true and unambiguous by construction.

Shared by the synthetic scenes and the land-cover converter. A scene is a list of
:class:`Region` s (an object or a connected component, with a category and optional
attributes such as a colour). Every rule is a *three-valued* predicate over the regions of one
category: ``True`` (clearly holds), ``False`` (clearly not) or ``None`` (borderline, e.g. a
centroid near the line between two thirds of the image). A phrase is kept only when no region is
borderline and exactly the intended regions hold, so "the building in the top left" is said only
when one building is clearly there and no other is even close to being there.

Rules (their names key the per-rule counts): ``class`` ("the water", "all buildings"),
``position`` ("the building in the top left"), ``extreme`` ("the leftmost vehicle"), ``size``
("the largest building"), ``relation`` ("the vehicle next to the water"), ``colour`` ("the red
vehicle"; any attribute key works the same way), ``colour-group`` ("all red buildings"),
``half-group`` ("all buildings in the left half") and ``colour+<rule>`` combinations ("the
largest red building").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

Truth = bool | None
BANDS = ((0, "top", "left"), (1, "middle", "center"), (2, "bottom", "right"))
POSITIONS = {  # phrase -> (vertical band, horizontal band); None: any
    "in the top left": (0, 0),
    "in the top right": (0, 2),
    "in the bottom left": (2, 0),
    "in the bottom right": (2, 2),
    "at the top": (0, None),
    "at the bottom": (2, None),
    "on the left": (None, 0),
    "on the right": (None, 2),
    "in the center": (1, 1),
}
POSITION_VARIANTS = {
    "in the top left": ("in the top left", "in the upper left corner"),
    "in the top right": ("in the top right", "in the upper right corner"),
    "in the bottom left": ("in the bottom left", "in the lower left corner"),
    "in the bottom right": ("in the bottom right", "in the lower right corner"),
    "at the top": ("at the top", "at the top of the image"),
    "at the bottom": ("at the bottom", "at the bottom of the image"),
    "on the left": ("on the left", "on the left side"),
    "on the right": ("on the right", "on the right side"),
    "in the center": ("in the center", "in the middle of the image"),
}
EXTREMES = {"leftmost": (1, min), "rightmost": (1, max), "topmost": (0, min), "bottommost": (0, max)}
HALVES = {"left half": (1, min), "right half": (1, max), "top half": (0, min), "bottom half": (0, max)}


@dataclass(frozen=True)
class Noun:
    """How a category is named: ``singular``/``plural`` for instances, ``mass`` for the whole
    class of an uncountable one ("the water", "the vegetation")."""

    singular: str
    plural: str
    mass: str | None = None


@dataclass
class Region:
    """One referable object: ``mask`` ``bool [H, W]``; ``attributes`` e.g. ``{"colour": "red"}``;
    ``noun`` names this one when it differs from its category's (e.g. "building complex" for an
    irregular building footprint, which still competes with the other buildings)."""

    category: str
    mask: np.ndarray
    attributes: dict[str, str] = field(default_factory=dict)
    noun: Noun | None = None

    def __post_init__(self) -> None:
        rows, cols = np.flatnonzero(self.mask.any(1)), np.flatnonzero(self.mask.any(0))
        if rows.size == 0:
            raise ValueError(f"a {self.category} region has an empty mask")
        self.box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)  # y0, y1, x0, x1
        crop = self.mask[self.box[0] : self.box[1], self.box[2] : self.box[3]]
        self.area = int(crop.sum())
        self._sums = (crop.sum(1), crop.sum(0))  # pixels per row / column inside the box

    @cached_property
    def profiles(self) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative fraction of the area above each row / left of each column ``[H]``, ``[W]``."""
        out = []
        for axis, sums in enumerate(self._sums):
            profile = np.ones(self.mask.shape[axis])
            start, stop = self.box[2 * axis], self.box[2 * axis + 1]
            profile[:start] = 0.0
            profile[start:stop] = np.cumsum(sums) / self.area
            out.append(profile)
        return out[0], out[1]

    @cached_property
    def centroid(self) -> tuple[float, float]:
        """(y, x) as fractions of the image height and width."""
        return tuple(
            float((sums * (np.arange(len(sums)) + self.box[2 * axis] + 0.5)).sum()) / self.area / self.mask.shape[axis]
            for axis, sums in enumerate(self._sums)
        )

    def extent(self, axis: int) -> float:
        """Length of the bounding box along ``axis`` as a fraction of the image."""
        return (self.box[2 * axis + 1] - self.box[2 * axis]) / self.mask.shape[axis]

    def fraction_before(self, axis: int, t: float) -> float:
        """Fraction of the area whose coordinate along ``axis`` (0: y, 1: x) is below ``t``."""
        profile = self.profiles[axis]
        k = min(max(round(t * len(profile)), 0), len(profile))
        return float(profile[k - 1]) if k else 0.0


@dataclass(frozen=True)
class Referring:
    """One expression and what it names: ``mask`` ``bool [H, W]``; ``members`` index the regions
    (empty for class-level expressions)."""

    expression: str
    mask: np.ndarray
    category: str
    rule: str
    members: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExpressionConfig:
    """Thresholds that make phrases "clearly" true (fractions of the image size)."""

    margin: float = 0.04  # a centroid this close to a third's line is borderline
    band_fraction: float = 0.6  # share of the area that must lie in the named band
    extreme_gap: float = 0.08  # "leftmost": the runner-up's centroid is at least this further
    size_ratio: float = 1.5  # "largest": at least this times the runner-up's area
    big_ratio: float = 2.5  # "the large X": at least this times every other one
    near: float = 0.03  # "next to": within this distance (of the longer image side) ...
    far: float = 0.12  # ... and every other one at least this far
    half_fraction: float = 0.8  # "all X in the left half": share of each one's area there
    max_per_referent: int = 2  # phrases kept per distinct target
    min_class_fraction: float = 0.0  # class-level referents need this share of the image
    landmarks: tuple[str, ...] | None = None  # categories "next to" may name (None: all)
    # instance-level rules allowed per category (missing: all), e.g. {"road": ("position",)}
    category_rules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def band_truth(region: Region, axis: int, band: int, cfg: ExpressionConfig) -> Truth:
    """Is the region in third ``band`` (0, 1, 2) of the image along ``axis``?"""
    c, m = region.centroid[axis], cfg.margin
    possible = {b for b in range(3) if b / 3 - m <= c <= (b + 1) / 3 + m}
    if band not in possible:
        return False
    inside = region.fraction_before(axis, (band + 1) / 3 + m) - region.fraction_before(axis, band / 3 - m)
    return True if possible == {band} and inside >= cfg.band_fraction else None


def _all(values: Sequence[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return True if all(v is True for v in values) else None


def _ranked(values: Sequence[float], pick: Callable, gap: float, ratio: bool = False) -> list[Truth]:
    """The clear winner of ``pick`` (min or max) is True, the others False; no clear one: None."""
    if len(values) < 2:
        return [None] * len(values)
    order = sorted(range(len(values)), key=values.__getitem__, reverse=pick is max)
    first, second = values[order[0]], values[order[1]]
    if ratio:
        clear = (first >= gap * second) if pick is max else (first * gap <= second)
    else:
        clear = abs(second - first) >= gap
    out: list[Truth] = [False] * len(values)
    out[order[0]] = True if clear else None
    return out


class _Describer:
    """Enumerates the rules over one scene and keeps the unambiguous phrases."""

    def __init__(self, regions, nouns, rng, class_masks, cfg) -> None:
        self.regions, self.nouns, self.rng, self.cfg = list(regions), nouns, rng, cfg
        self.shape = self.regions[0].mask.shape if self.regions else next(iter(class_masks.values())).shape
        self.class_masks = dict(class_masks) if class_masks is not None else {}
        for r in self.regions:
            self.class_masks.setdefault(r.category, np.zeros(self.shape, bool))
            if class_masks is None:
                self.class_masks[r.category] |= r.mask
        self.by_category: dict[str, list[int]] = {}
        for i, r in enumerate(self.regions):
            self.by_category.setdefault(r.category, []).append(i)
        self.candidates: dict[tuple, list[tuple[str, str]]] = {}  # target -> [(rule, phrase)]
        self._distance: dict[str, np.ndarray] = {}
        self._gaps: dict[tuple[int, str], float] = {}

    def choose(self, variants: Sequence[str]) -> str:
        return variants[int(self.rng.integers(len(variants)))]

    def add(self, members: Sequence[int], category: str, rule: str, phrase: str) -> None:
        allowed = self.cfg.category_rules.get(category)
        if members and allowed is not None and not set(rule.split("+")) <= set(allowed):
            return
        self.candidates.setdefault((category, tuple(members)), []).append((rule, " ".join(phrase.split())))

    def distance_to(self, category: str) -> np.ndarray:
        """Distance (pixels) of every pixel to the nearest pixel of ``category``."""
        if category not in self._distance:
            outside = (~self.class_masks[category]).astype(np.uint8)
            self._distance[category] = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
        return self._distance[category]

    def gap(self, index: int, category: str) -> float:
        """Shortest distance from region ``index`` to ``category``, as a fraction of the longer side."""
        key = (index, category)
        if key not in self._gaps:
            region = self.regions[index]
            y0, y1, x0, x1 = region.box
            inside = self.distance_to(category)[y0:y1, x0:x1][region.mask[y0:y1, x0:x1]]
            self._gaps[key] = float(inside.min()) / max(self.shape)
        return self._gaps[key]

    def landmark(self, category: str) -> str:
        noun = self.nouns[category]
        if noun.mass:
            return f"the {noun.mass}"
        return f"the {noun.singular}" if len(self.by_category.get(category, [])) == 1 else f"a {noun.singular}"

    # --- the rules ---------------------------------------------------------------------------
    def descriptors(self, category: str) -> list[tuple[str, Callable[[list[int]], list[Truth]], list]]:
        """(rule, truth over candidate indices, [(pre, post) phrase variants]) for one category."""
        cfg, out = self.cfg, []
        for phrase, (v, h) in POSITIONS.items():
            axes = [(0, v), (1, h)]

            def position(ids, axes=axes):
                return [_all([band_truth(self.regions[i], a, b, cfg) for a, b in axes if b is not None]) for i in ids]

            out.append(("position", position, [("", p) for p in POSITION_VARIANTS[phrase]]))
        for word, (axis, pick) in EXTREMES.items():

            def extreme(ids, axis=axis, pick=pick):
                if any(self.regions[i].extent(axis) > 0.5 for i in ids):
                    return [None] * len(ids)  # "the leftmost road" means little for a road crossing the image
                return _ranked([self.regions[i].centroid[axis] for i in ids], pick, cfg.extreme_gap)

            out.append(("extreme", extreme, [(word, "")]))
        area = lambda ids: [float(self.regions[i].area) for i in ids]  # noqa: E731
        out.append(
            ("size", lambda ids: _ranked(area(ids), max, cfg.size_ratio, True), [("largest", ""), ("biggest", "")])
        )
        out.append(("size", lambda ids: _ranked(area(ids), max, cfg.big_ratio, True), [("large", ""), ("big", "")]))
        out.append(("size", lambda ids: _ranked(area(ids), min, cfg.size_ratio, True), [("smallest", "")]))
        out.append(("size", lambda ids: _ranked(area(ids), min, cfg.big_ratio, True), [("small", "")]))
        for other in self.class_masks:
            if other == category or other not in self.nouns or not self.class_masks[other].any():
                continue
            if cfg.landmarks is not None and other not in cfg.landmarks:
                continue
            landmark = self.landmark(other)

            def near(ids, other=other):
                dist = [self.gap(i, other) for i in ids]
                return [True if d <= cfg.near else False if d >= cfg.far else None for d in dist]

            def closest(ids, other=other):
                return _ranked([self.gap(i, other) for i in ids], min, cfg.far - cfg.near)

            out.append(("relation", near, [("", f"next to {landmark}"), ("", f"beside {landmark}")]))
            out.append(("relation", closest, [("", f"closest to {landmark}"), ("", f"nearest to {landmark}")]))
        return out

    def singles(self, category: str, ids: list[int], noun: Noun, rule_prefix: str = "", adjective: str = "") -> None:
        for rule, truth, variants in self.descriptors(category):
            values = truth(ids)
            if None in values or values.count(True) != 1:
                continue
            target = ids[values.index(True)]
            name = (self.regions[target].noun or noun).singular
            pre, post = self.choose(variants)
            self.add([target], category, rule_prefix + rule, f"the {pre} {adjective} {name} {post}")

    def class_level(self, category: str, noun: Noun) -> None:
        mask = self.class_masks[category]
        if not mask.any() or mask.mean() < self.cfg.min_class_fraction:
            return
        count = len(self.by_category.get(category, []))
        if noun.mass:
            variants = [f"the {noun.mass}", f"all the {noun.mass}"]
        elif count >= 2:
            variants = [f"all {noun.plural}", f"the {noun.plural}", f"every {noun.singular}"]
        else:
            variants = [f"the {noun.singular}"]
        self.add([], category, "class", self.choose(variants))

    def groups(self, category: str, ids: list[int], noun: Noun) -> None:
        keys = sorted({k for i in ids for k in self.regions[i].attributes})
        for key in keys:  # attributes are adjectives: "the red vehicle", "the horizontal road"
            for value in sorted({self.regions[i].attributes[key] for i in ids if key in self.regions[i].attributes}):
                same = [i for i in ids if self.regions[i].attributes.get(key) == value]
                if len(same) == 1:
                    self.add(same, category, key, f"the {value} {(self.regions[same[0]].noun or noun).singular}")
                elif len(same) < len(ids):
                    variants = [f"all {value} {noun.plural}", f"the {value} {noun.plural}"]
                    self.add(same, category, f"{key}-group", self.choose(variants))
                if len(same) >= 2:  # the attribute alone is ambiguous: combine it with another rule
                    self.singles(category, same, noun, f"{key}+", value)
        for half, (axis, side) in HALVES.items():
            values = []
            for i in ids:
                c, m = self.regions[i].centroid[axis], self.cfg.margin
                share = self.regions[i].fraction_before(axis, 0.5 + m)
                if side is max:
                    c, share = 1 - c, 1 - self.regions[i].fraction_before(axis, 0.5 - m)
                values.append(
                    False if c > 0.5 + m else True if c < 0.5 - m and share >= self.cfg.half_fraction else None
                )
            matched = [i for i, v in zip(ids, values) if v]
            if None not in values and 2 <= len(matched) < len(ids):
                self.add(
                    matched,
                    category,
                    "half-group",
                    self.choose([f"all {noun.plural} in the {half}", f"the {noun.plural} in the {half}"]),
                )

    def run(self) -> list[Referring]:
        for category in sorted(self.class_masks):
            if category not in self.nouns:
                continue
            noun, ids = self.nouns[category], self.by_category.get(category, [])
            self.class_level(category, noun)
            if ids:
                self.singles(category, ids, noun)
                self.groups(category, ids, noun)
        results = []
        for (category, members), phrases in self.candidates.items():
            unique = list(dict.fromkeys(phrases))
            keep = self.rng.permutation(len(unique))[: self.cfg.max_per_referent]
            mask = (
                self.class_masks[category]
                if not members
                else np.logical_or.reduce([self.regions[i].mask for i in members])
            )
            results.extend(Referring(unique[k][1], mask, category, unique[k][0], members) for k in sorted(keep))
        return results


def describe(
    regions: Sequence[Region],
    nouns: Mapping[str, Noun],
    rng: np.random.Generator,
    class_masks: Mapping[str, np.ndarray] | None = None,
    config: ExpressionConfig | None = None,
) -> list[Referring]:
    """Every unambiguous expression the rules find for one scene (deterministic given ``rng``).

    ``class_masks``: the full mask of each class (e.g. every building pixel, including
    fragments too small to be regions); by default the union of the regions of each category.
    Categories missing from ``nouns`` are landmarks only if named there, else ignored.
    """
    if not regions and not class_masks:
        return []
    return _Describer(regions, nouns, rng, class_masks, config or ExpressionConfig()).run()
