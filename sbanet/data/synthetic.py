"""Procedural aerial-like scenes with referring expressions that need the language.

A scene is textured ground with straight roads, ponds, groups of trees, buildings (gable or
flat roofs of several colours and sizes, with shadows) and vehicles of several colours on the
roads. Its expressions come from :mod:`sbanet.data.expressions`: class-level ("the water", "all
buildings"), attributes ("the red vehicle", "the horizontal road"), absolute position ("the
building in the top left"), size ("the largest building"), relations ("the vehicle next to the
water") and multi-object referents ("all white buildings"), each checked to be unambiguous.

Everything is deterministic by seed: the layout, the texture and the phrasing draw from
independent streams, so a sample's mask is rebuilt without re-rendering the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from sbanet.data.writer import FolderWriter

from .expressions import ExpressionConfig, Noun, Referring, Region, describe
from .rrsisd import decode_segmentation
from .sample import ReferringSample

NOUNS = {
    "building": Noun("building", "buildings"),
    "road": Noun("road", "roads"),
    "water": Noun("pond", "ponds", "water"),
    "vegetation": Noun("group of trees", "groups of trees", "vegetation"),
    "vehicle": Noun("vehicle", "vehicles"),
}
ROOFS = {"red": (168, 62, 48), "white": (226, 224, 216), "gray": (118, 120, 126), "blue": (58, 92, 152)}
GABLE_ROOFS = {"red"}
VEHICLES = {"red": (196, 32, 36), "white": (238, 238, 234), "black": (28, 28, 32), "blue": (36, 72, 196)}
VEHICLES["yellow"] = (232, 196, 40)
GROUNDS = ((186, 172, 140), (156, 150, 112), (170, 160, 138))
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
CONFIG = ExpressionConfig(landmarks=("water", "road", "vegetation"), max_per_referent=2)


@dataclass
class _Object:
    category: str
    mask: np.ndarray  # bool [S, S], visible pixels
    attributes: dict[str, str] = field(default_factory=dict)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # y0, y1, x0, x1


def _noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Smooth noise ``float32 [S, S]`` (std ~1) with features of about ``cell`` pixels."""
    n = max(2, size // cell)
    grid = (rng.random((n, n), dtype=np.float32) - 0.5) * 3.46  # uniform, std 1
    if cell > 8:  # smooth (bicubic) at 1/8 of the size, then bilinear: no facets, and cheap
        grid = cv2.resize(grid, (size // 8, size // 8), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)


def _blob(rng: np.random.Generator, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """The outline ``int32 [32, 2]`` (x, y) of an irregular closed shape (a wobbly ellipse)."""
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    wobble = 1 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    ys = centre[0] + radii[0] * wobble * np.sin(angles)
    xs = centre[1] + radii[1] * wobble * np.cos(angles)
    return np.stack([xs, ys], 1).round().astype(np.int32)


class _Canvas:
    """Places objects without overlap: each placed object blocks its box plus a gap."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.blocked = np.zeros((size, size), bool)
        self.objects: list[_Object] = []

    def free(self, box: tuple[int, int, int, int], blocked: np.ndarray | None = None) -> bool:
        y0, y1, x0, x1 = box
        inside = 0 <= y0 < y1 <= self.size and 0 <= x0 < x1 <= self.size
        return inside and not (self.blocked if blocked is None else blocked)[y0:y1, x0:x1].any()

    def place(self, category: str, box, gap: int, outline=None, attributes=None) -> _Object:
        y0, y1, x0, x1 = box
        mask = np.zeros((self.size, self.size), np.uint8)
        if outline is None:
            mask[y0:y1, x0:x1] = 1
        else:
            cv2.fillPoly(mask, [outline], 1)
        self.blocked[max(0, y0 - gap) : y1 + gap, max(0, x0 - gap) : x1 + gap] = True
        obj = _Object(category, mask.astype(bool), dict(attributes or {}), box)
        self.objects.append(obj)
        return obj


def scene_layout(rng: np.random.Generator, size: int) -> list[_Object]:
    """Objects of one scene in painting order (roads, ponds, trees, buildings, vehicles)."""
    s = size / 448
    canvas = _Canvas(size)
    orientations = [["horizontal"], ["vertical"], ["horizontal", "vertical"], ["horizontal", "horizontal"]]
    centres: list[int] = []
    roads = []
    for orientation in orientations[int(rng.choice(4, p=[0.25, 0.25, 0.35, 0.15]))]:
        width = int(rng.uniform(18, 28) * s)
        centre = int(rng.uniform(0.18, 0.82) * size)
        if any(abs(centre - c) < 0.3 * size for c in centres):  # two parallel roads: keep them apart
            centre = size - centre if abs(size - 2 * centre) > 0.3 * size else int(0.2 * size)
        centres.append(centre)
        lo, hi = centre - width // 2, centre + width - width // 2
        box = (lo, hi, 0, size) if orientation == "horizontal" else (0, size, lo, hi)
        roads.append(canvas.place("road", box, int(6 * s), attributes={"orientation": orientation}))
    blobs = (("water", rng.choice([0, 1, 1, 2]), (0.06, 0.16)), ("vegetation", rng.integers(1, 4), (0.05, 0.13)))
    for category, count, radius in blobs:
        for _ in range(int(count)):
            for _attempt in range(12):
                ry, rx = rng.uniform(*radius, 2) * size
                outline = _blob(rng, (rng.uniform(ry, size - ry), rng.uniform(rx, size - rx)), (ry, rx))
                (x0, y0), (x1, y1) = outline.min(0), outline.max(0) + 1
                if canvas.free((int(y0), int(y1), int(x0), int(x1))):
                    canvas.place(category, (int(y0), int(y1), int(x0), int(x1)), int(4 * s), outline)
                    break
    for _ in range(int(rng.integers(3, 8))):
        low, high = ((0.05, 0.08), (0.09, 0.13), (0.15, 0.22))[rng.choice(3, p=[0.45, 0.35, 0.2])]
        for _attempt in range(15):
            h, w = (rng.uniform(low, high, 2) * size).astype(int)
            y0, x0 = int(rng.integers(2, size - h - 2)), int(rng.integers(2, size - w - 2))
            if canvas.free((y0, y0 + h, x0, x0 + w)):
                colour = str(rng.choice(list(ROOFS)))
                canvas.place("building", (y0, y0 + h, x0, x0 + w), int(6 * s), attributes={"colour": colour})
                break
    taken = np.zeros((size, size), bool)  # vehicles keep apart and off crossings
    for road in roads:
        for other in roads:
            if other is not road:
                taken |= road.mask & other.mask
    length, width, gap = max(6, int(18 * s)), max(3, int(8 * s)), int(5 * s)
    for _ in range(int(rng.integers(2, 7))):
        road = roads[int(rng.integers(len(roads)))]
        y0, y1, x0, x1 = road.box
        for _attempt in range(10):
            along = int(rng.integers(4, size - length - 4))
            offset = 2 if rng.random() < 0.5 else -width - 2  # the lane
            if road.attributes["orientation"] == "horizontal":
                box = ((y0 + y1) // 2 + offset, (y0 + y1) // 2 + offset + width, along, along + length)
            else:
                box = (along, along + length, (x0 + x1) // 2 + offset, (x0 + x1) // 2 + offset + width)
            if canvas.free((box[0] - gap, box[1] + gap, box[2] - gap, box[3] + gap), taken):
                vehicle = canvas.place("vehicle", box, 0, attributes={"colour": str(rng.choice(list(VEHICLES)))})
                taken[box[0] : box[1], box[2] : box[3]] = True
                road.mask &= ~vehicle.mask  # the vehicle hides the road under it
                break
    return canvas.objects


def _window(obj: _Object) -> tuple[slice, slice]:
    y0, y1, x0, x1 = obj.box
    return slice(y0, y1), slice(x0, x1)


def render(objects: list[_Object], rng: np.random.Generator, size: int) -> np.ndarray:
    """Paint the objects over textured ground -> ``uint8 [S, S, 3]``."""
    s = size / 448
    ground = np.asarray(GROUNDS[int(rng.integers(len(GROUNDS)))], np.float32)
    fine = _noise(rng, size, 2)
    texture = 0.08 * _noise(rng, size, 48) + 0.05 * _noise(rng, size, 12) + 0.025 * fine
    image = ground * (1 + texture)[..., None]
    crowns = _noise(rng, size, 4)
    for obj in objects:
        win = _window(obj)
        m, part, grain = obj.mask[win], image[win], fine[win][..., None]
        if obj.category == "road":
            part[m] = (np.array((96, 96, 100), np.float32) * (1 + 0.05 * grain))[m]
            h, w = m.shape
            dash = np.arange(max(h, w)) % int(26 * s) < int(14 * s)
            line = np.zeros_like(m)
            if obj.attributes["orientation"] == "horizontal":
                line[h // 2 - 1 : h // 2 + 1, dash[:w]] = True
            else:
                line[dash[:h], w // 2 - 1 : w // 2 + 1] = True
            part[line & m] = (214, 212, 198)
        elif obj.category == "water":
            depth = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
            depth = np.clip(depth / (14 * s), 0, 1)[..., None]
            shallow, deep = np.array((74, 112, 118), np.float32), np.array((26, 52, 74), np.float32)
            part[m] = ((shallow * (1 - depth) + deep * depth) * (1 + 0.04 * grain))[m]
        elif obj.category == "vegetation":
            leaves = crowns[win][..., None]
            part[m] = (np.array((64, 98, 46), np.float32) * (1 + 0.22 * leaves) * np.where(leaves > 0.9, 0.55, 1))[m]
    buildings = [o for o in objects if o.category == "building"]
    shadow = np.zeros((size, size), np.uint8)
    for b in buildings:  # the sun in the top left: shadows fall to the bottom right
        y0, y1, x0, x1 = b.box
        d = int((5 + 0.06 * min(y1 - y0, x1 - x0)) * s)
        points = [[x0, y0], [x1, y0], [x1 + d, y0 + d], [x1 + d, y1 + d], [x0 + d, y1 + d], [x0, y1]]
        cv2.fillPoly(shadow, [np.array(points, np.int32)], 1)
    image *= (1 - 0.42 * shadow.astype(np.float32))[..., None]
    for b in buildings:
        _roof(image, b, rng, fine, s)
    for v in (o for o in objects if o.category == "vehicle"):
        y0, y1, x0, x1 = v.box
        colour = np.asarray(VEHICLES[v.attributes["colour"]], np.float32)
        image[y0 + 1 : y1 + 1, x0 + 1 : x1 + 1] *= 0.6  # a short shadow
        image[y0:y1, x0:x1] = colour * 0.8
        image[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = colour
        horizontal = (x1 - x0) > (y1 - y0)
        third = ((x1 - x0) if horizontal else (y1 - y0)) // 3
        depth = max(2, third // 2)
        if horizontal:
            image[y0 + 1 : y1 - 1, x0 + third : x0 + third + depth] = (40, 48, 60)  # the windscreen
        else:
            image[y0 + third : y0 + third + depth, x0 + 1 : x1 - 1] = (40, 48, 60)
    image = cv2.GaussianBlur(image, (3, 3), 0.7)
    return np.clip(image, 0, 255).astype(np.uint8)


def _roof(image: np.ndarray, building: _Object, rng: np.random.Generator, fine: np.ndarray, s: float) -> None:
    y0, y1, x0, x1 = building.box
    colour = np.asarray(ROOFS[building.attributes["colour"]], np.float32)
    roof = image[y0:y1, x0:x1]
    roof[:] = colour * (1 + 0.03 * fine[y0:y1, x0:x1])[..., None]
    h, w = y1 - y0, x1 - x0
    if building.attributes["colour"] in GABLE_ROOFS:  # two slopes lit differently, a ridge
        if w >= h:
            roof[: h // 2] *= 1.1
            roof[h // 2 :] *= 0.82
            roof[h // 2 - 1 : h // 2 + 1] = colour * 1.2
        else:
            roof[:, : w // 2] *= 0.82
            roof[:, w // 2 :] *= 1.1
            roof[:, w // 2 - 1 : w // 2 + 1] = colour * 1.2
    else:  # flat: a darker parapet and a few rooftop units
        edge = max(1, int(2 * s))
        for border in (np.s_[:edge], np.s_[-edge:], np.s_[:, :edge], np.s_[:, -edge:]):
            roof[border] *= 0.8
        for _ in range(int(rng.integers(0, 4))):
            uh, uw = (rng.integers(3, 7, 2) * s).astype(int) + 1
            if h > uh + 4 * edge and w > uw + 4 * edge:
                uy, ux = int(rng.integers(2 * edge, h - uh - 2 * edge)), int(rng.integers(2 * edge, w - uw - 2 * edge))
                roof[uy : uy + uh, ux : ux + uw] = colour * 0.7 + 70


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent layout, texture and phrasing generators for one scene."""
    layout, texture, phrasing = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(layout), np.random.default_rng(texture), np.random.default_rng(phrasing)


def render_scene(seed: int, size: int = 448) -> np.ndarray:
    """Only the image of scene ``seed``: ``uint8 [S, S, 3]``."""
    layout_rng, texture_rng, _ = _streams(seed)
    return render(scene_layout(layout_rng, size), texture_rng, size)


def _describe(objects: list[_Object], rng: np.random.Generator) -> list[Referring]:
    return describe([Region(o.category, o.mask, o.attributes) for o in objects], NOUNS, rng, config=CONFIG)


def scene_expressions(seed: int, size: int = 448) -> list[Referring]:
    """Only the expressions (and masks ``bool [S, S]``) of scene ``seed``."""
    layout_rng, _, phrasing_rng = _streams(seed)
    return _describe(scene_layout(layout_rng, size), phrasing_rng)


def make_scene(seed: int, size: int = 448) -> tuple[np.ndarray, list[Referring]]:
    """Scene ``seed``: the image ``uint8 [S, S, 3]`` and its referring expressions."""
    if size < 64:
        raise ValueError(f"synthetic scenes need size >= 64, got {size}")
    layout_rng, texture_rng, phrasing_rng = _streams(seed)
    objects = scene_layout(layout_rng, size)
    return render(objects, texture_rng, size), _describe(objects, phrasing_rng)


def scene_seed(seed: int, split: str, index: int) -> int:
    """A scene seed unique to (seed, split, index): splits never share scenes."""
    stream = SPLIT_STREAMS.get(split, 3 + sum(split.encode()))
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def synthetic_samples(
    root: object = None, split: str = "train", n_images: int = 200, seed: int = 0, size: int = 448
) -> list[ReferringSample]:
    """Samples of ``n_images`` scenes (a few expressions each). ``root`` is unused (the
    :func:`sbanet.data.load_samples` signature). Masks are kept as COCO RLE (a few hundred bytes);
    images are re-rendered on demand (the dataset's cache keeps recent ones)."""
    from pycocotools import mask as mask_utils

    if n_images < 0 or size < 64:
        raise ValueError(f"n_images must be >= 0 and size >= 64, got {n_images}, {size}")
    samples = []
    for index in range(n_images):
        current = scene_seed(seed, split, index)
        load_image = partial(render_scene, current, size)
        for k, ref in enumerate(scene_expressions(current, size)):
            rle = mask_utils.encode(np.asfortranarray(ref.mask.astype(np.uint8)))
            samples.append(
                ReferringSample(
                    sample_id=f"synthetic/{split}/{index}/{k}",
                    image_id=f"synthetic/{seed}/{split}/{index}",
                    expression=ref.expression,
                    split=split,
                    load_image=load_image,
                    load_mask=partial(decode_segmentation, rle),
                    category=ref.category,
                    ref_id=f"{index}/{k}",
                )
            )
    return samples


def benchmark(n_scenes: int, size: int = 448) -> dict[str, float]:
    """CPU milliseconds per scene for each stage (process time: less sensitive to other load)."""
    totals = dict.fromkeys(("layout", "render", "describe", "make_scene"), 0.0)
    make_scene(0, size)  # warm up imports and caches
    for seed in range(n_scenes):
        layout_rng, texture_rng, phrasing_rng = _streams(seed)
        t0 = time.process_time()
        objects = scene_layout(layout_rng, size)
        t1 = time.process_time()
        render(objects, texture_rng, size)
        t2 = time.process_time()
        _describe(objects, phrasing_rng)
        t3 = time.process_time()
        make_scene(seed, size)
        t4 = time.process_time()
        for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[key] += value
    return {f"{key}_ms": 1000 * value / max(n_scenes, 1) for key, value in totals.items()}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Write synthetic scenes as a folder dataset, or time them.")
    parser.add_argument("--output", help="folder to write (RefSegRS layout, read by load_samples('folder', ...))")
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", type=int, metavar="N", help="time N scenes instead, print a table")
    parser.add_argument("--json", help="with --bench: also write the timings here")
    args = parser.parse_args(argv)
    if args.bench:
        result = {"size": args.size, "scenes": args.bench, **benchmark(args.bench, args.size)}
        print(f"{'stage':<12}{'ms/scene':>10}   ({args.bench} scenes of {args.size}x{args.size}, CPU time)")
        for key, value in result.items():
            if key.endswith("_ms"):
                print(f"{key[:-3]:<12}{value:>10.1f}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    if not args.output:
        parser.error("give --output (or --bench N)")
    with FolderWriter(args.output) as writer:
        for index in range(args.n_images):
            image, refs = make_scene(scene_seed(args.seed, args.split, index), args.size)
            for k, ref in enumerate(refs):
                sample_id, key = f"scene{index:04d}_{k:02d}", f"scene{index:04d}"
                writer.add(
                    args.split, sample_id, key, image, ref.mask, ref.expression, category=ref.category, rule=ref.rule
                )
    print(f"wrote {writer.counts[args.split]} samples of {args.n_images} scenes to {args.output}")


if __name__ == "__main__":
    main()
