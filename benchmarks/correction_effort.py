"""How many actions it takes to correct the shipped model's masks, with each toolset.

    python -m benchmarks.correction_effort --json benchmarks/results/correction_effort.json

Cases: the dubai-aerial tile-6 images (the default model never trained on them) with each
land-cover class covering >= 5 % of an image named at class level ("the water", "all
buildings", "the roads", "the vegetation"), read from ``../shared/data``; the shipped model's
mask of each is corrected toward the land-cover truth.

Two parts:

1. *One click*: for each case's largest missed and wrongly covered pieces (error components), a
   click at the piece's innermost pixel with each region method of :mod:`annotate.edit.regions`;
   how much of the piece the snapped region recovers (recall), how much of the region was really
   wrong (precision) and the mask IoU gained.
2. *Effort*: a scripted annotator corrects each mask greedily, one action at a time, until mask
   IoU >= ``--target`` or ``--cap`` actions, with four toolsets: brush only; brush + colour
   regions (superpixel clicks at each of the region sizes, fill holes, remove specks); brush +
   region tools (those and the model's region); and + polygon (each vertex a click, the closing
   click on the first vertex one more). Each step it works on the largest error piece and takes
   the candidate action with the most IoU gained per action. It applies the very functions the
   Correct tab calls (:mod:`annotate.edit`, the superpixels computed once per picture and size as
   the tab keeps them). The brush is generous to the annotator: a stroke follows the piece's
   skeleton for up to :data:`STROKE_LENGTH` pixels with a brush as wide as the piece (changing
   the brush size is free). With ``--setting-cost 1`` every change of a setting the tab shows as
   a radio button (add or remove brush; the tool; the region size or source) costs an action too.

What the annotator knows is what a person sees: the picture, the current mask and where it is
wrong (the error pieces); it clicks at a piece's innermost pixel. Choosing among the candidate
actions by the IoU each would reach is the idealisation: a person who knows what each tool does.

It runs in Python, not in a browser: actions are counted, and the seconds are the tools' own
compute time per mask, not an annotator's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from annotate.edit import regions, shapes
from recipes.default_model.scale import CLASS_EXPRESSIONS, DATA, MIN_FRACTION

TOOLSETS = ("brush", "brush+colour", "brush+region", "brush+region+polygon")
STROKE_LENGTH = 120  # pixels of skeleton one brush stroke follows (a drag of about a fifth of the image)
MAX_BRUSH = 40  # the widest brush radius the annotator uses (the editor's slider goes to 100 px wide)
MIN_PIECE = 50  # error pieces smaller than this are not worth an action
SPECKS = 200  # remove specks below this many pixels
HOLES = 2000  # fill holes of at most this many pixels
POLYGON_TOLERANCE = 3.0  # pixels a simplified outline may stray from the piece's
MAX_VERTICES = 40
# how the annotator uses the canvas: "explicit": the Add / Remove buttons, the Region choice and the
# brush and eraser tools; "auto": the Auto mode (the click decides add or remove, the canvas's
# default); "shortcuts": Auto, the region's source by modifier (Shift medium, Alt large, Ctrl the
# model's map), a right drag erasing and the region tool's drags painting like the brush (so a
# stroke needs no tool switch). Each is a way the canvas really works.
MODES = ("explicit", "auto", "shortcuts")
LOOK_AT = 8  # error pieces the annotator looks at, largest first, for one that an action improves
MILESTONES = (0.7, 0.8, 0.9)


def cases(data: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, image uint8 [H, W, 3], truth, model mask bool [H, W], probability float [H, W])``."""
    from sbanet.data.land_cover import class_cases
    from sbanet.data.semantic import DUBAI_CLASSES
    from sbanet.inference.predictor import Predictor
    from sbanet.inference.shipped import SHIPPED_MODEL

    predictor = Predictor.from_pretrained(SHIPPED_MODEL)
    root = data / "dubai-aerial" / "tile6"
    for path, image, truths in class_cases(root, CLASS_EXPRESSIONS, DUBAI_CLASSES, MIN_FRACTION):
        for prediction in predictor.predict_batch(image, list(truths), False):
            truth = truths[prediction.expression]
            yield f"{path.stem} {prediction.expression}", image, truth, prediction.mask, prediction.probability


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def error_pieces(mask: np.ndarray, truth: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """The error components, largest first: ``(piece bool [H, W], add)`` (``add``: missed)."""
    pieces = []
    for wrong, add in ((truth & ~mask, True), (mask & ~truth, False)):
        labels, areas = shapes.components(wrong)
        pieces += [(int(areas[i]), i, labels, add) for i in range(1, len(areas)) if areas[i] >= MIN_PIECE]
    pieces.sort(key=lambda p: -p[0])
    return [(labels == i, add) for _, i, labels, add in pieces]


def inner_point(piece: np.ndarray) -> tuple[tuple[int, int], float]:
    """The piece's innermost pixel ``(x, y)`` (farthest from its edge) and that distance."""
    distance = cv2.distanceTransform(np.pad(piece, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return (int(x), int(y)), float(distance[y, x])


def stroke_skeleton(piece: np.ndarray) -> tuple[np.ndarray, tuple[int, int], int]:
    """Where one stroke over ``piece`` goes: the piece's skeleton ``bool [H, W]`` within
    :data:`STROKE_LENGTH` / 2 of its innermost pixel (that pixel included), the pixel ``(x, y)``
    and the brush radius there (as wide as the piece, at most :data:`MAX_BRUSH`)."""
    from skimage.morphology import skeletonize

    (x, y), depth = inner_point(piece)
    skeleton = skeletonize(piece)
    rows, cols = np.indices(piece.shape)
    skeleton &= np.hypot(cols - x, rows - y) <= STROKE_LENGTH / 2
    skeleton[y, x] = True
    return skeleton, (x, y), int(np.clip(round(depth), 1, MAX_BRUSH))


def brush_stroke(mask: np.ndarray, piece: np.ndarray, add: bool) -> np.ndarray:
    """One stroke over ``piece``: its :func:`stroke_skeleton` painted with a disc as wide as the
    piece there."""
    path, _, radius = stroke_skeleton(piece)
    size = 2 * radius + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    painted = cv2.dilate(path.astype(np.uint8), disc).astype(bool)
    return mask | painted if add else mask & ~painted


def polygon_vertices(piece: np.ndarray) -> list[tuple[float, float]] | None:
    """The piece's outer outline simplified to at most :data:`MAX_VERTICES` vertices, at the
    outline pixels' centres (canvas coordinates); None if it needs more."""
    contours, _ = cv2.findContours(piece.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = cv2.approxPolyDP(max(contours, key=cv2.contourArea), POLYGON_TOLERANCE, True).reshape(-1, 2)
    if not 3 <= len(outline) <= MAX_VERTICES:
        return None
    return [(float(x) + 0.5, float(y) + 0.5) for x, y in outline]


def polygon_action(mask: np.ndarray, piece: np.ndarray, add: bool | None) -> tuple[np.ndarray, int] | None:
    """The piece's outline as a polygon (:func:`polygon_vertices`): the mask after it, and the
    clicks (one per vertex, one more to close on the first); None if it needs too many vertices."""
    vertices = polygon_vertices(piece)
    if vertices is None:
        return None
    return shapes.polygon(mask, vertices, add=add), len(vertices) + 1


Candidate = tuple[str, np.ndarray, int, dict[str, object]]  # (tool, mask after, actions, settings it needs)


@dataclass(frozen=True)
class Picture:
    """What the region tools work on for one case: the image ``uint8 [H, W, 3]``, the model's
    probability ``float [H, W]`` (None: no model region) and the superpixels of each size."""

    image: np.ndarray
    probability: np.ndarray | None
    pixels: dict[str, regions.Superpixels]

    @classmethod
    def of(cls, image: np.ndarray, probability: np.ndarray | None = None) -> Picture:
        pixels = {name: regions.superpixels(image, scale.area) for name, scale in regions.SCALES.items()}
        return cls(image, probability, pixels)

    def region_options(self, source: str) -> dict[str, object]:
        """:func:`annotate.edit.regions.click_region`'s options for a region click from ``source``
        (a size of :data:`annotate.edit.regions.SCALES` or ``"model"``), as the Correct tab passes them."""
        if source == "model":
            return {"method": "model", "probability": self.probability}
        return {"method": "superpixel", "scale": source, "pixels": self.pixels[source]}


def mode_needs(add: bool | None) -> dict[str, object]:
    """The canvas's mode a polygon or region action needs: none in *Auto* (``add=None``: the
    click decides, see :func:`annotate.edit.regions.adds_at`), else *Add* or *Remove*."""
    return {} if add is None else {"mode": "add" if add else "remove"}


def source_needs(source: str, modes: str) -> dict[str, object]:
    """The Region choice a region click from ``source`` needs: none for a modifier click
    (``"shortcuts"``: Shift medium, Alt large, Ctrl the model's map; a plain click takes the
    choice, which then stays at its first value), else ``source``."""
    if modes == "shortcuts":
        return {} if source != START_SETTINGS["region"] else {"region": source}
    return {"region": source}


def region_clicks(
    mask: np.ndarray, point: tuple[int, int], add: bool, picture: Picture, model: bool, modes: str
) -> Iterator[Candidate]:
    """A region click at ``point`` with each region size (and the model's region); outside the
    ``"explicit"`` modes the clicked pixel decides whether it adds or removes (*Auto*)."""
    auto = modes != "explicit"
    edit = regions.toggle_region if auto else regions.add_region if add else regions.remove_region
    needs = {"tool": "region"} | mode_needs(None if auto else add)
    sources = [*regions.SCALES, *(["model"] if model and picture.probability is not None else [])]
    for source in sources:
        after = edit(mask, picture.image, point, **picture.region_options(source))
        yield f"region {source}", after, 1, needs | source_needs(source, modes)


def candidates(
    toolset: str, mask: np.ndarray, piece: np.ndarray, add: bool, picture: Picture, modes: str = "auto"
) -> Iterator[Candidate]:
    """Every action of ``toolset`` the annotator considers for the error ``piece`` (toolset
    ``"region"``, the clicks without the brush, is what the browser run drives), with the
    canvas's settings each needs (see :data:`MODES`): the tool (brush, eraser, region, polygon),
    the mode of the region and polygon tools (none in *Auto*) and the region's size or source."""
    auto = modes != "explicit"
    if toolset != "region":
        # with the shortcuts a right drag erases, and the region tool's drags paint too: no tool to pick
        needs = {} if modes == "shortcuts" else {"tool": "brush" if add else "eraser"}
        yield "brush", brush_stroke(mask, piece, add), 1, needs
    if toolset == "brush":
        return
    point, _ = inner_point(piece)
    yield from region_clicks(mask, point, add, picture, model=toolset != "brush+colour", modes=modes)
    yield "fill holes", shapes.fill_holes(mask, HOLES), 1, {}
    yield "remove specks", shapes.remove_specks(mask, SPECKS), 1, {}
    if toolset == "brush+region+polygon":
        drawn = polygon_action(mask, piece, None if auto else add)
        if drawn is not None:
            yield "polygon", *drawn, {"tool": "polygon"} | mode_needs(None if auto else add)


@dataclass(frozen=True)
class Choice:
    """The annotator's next action: on the error piece at ``point`` (its innermost pixel; ``add``:
    a missed piece), ``tool`` gives ``after``; it takes ``cost`` actions, of which ``switches``
    are changes of the settings in ``needs``."""

    tool: str
    after: np.ndarray
    cost: int
    needs: dict[str, object]
    switches: int
    point: tuple[int, int]
    add: bool
    piece: np.ndarray | None = None  # the error piece it works on ``bool [H, W]``


def choose(
    picture: Picture,
    truth: np.ndarray,
    mask: np.ndarray,
    toolset: str,
    settings: dict[str, object],
    setting_cost: int,
    modes: str = "auto",
) -> Choice | None:
    """The best action on the largest error piece that any action improves (of the
    :data:`LOOK_AT` largest): the most IoU gained per action; None when none improves."""
    score, best = iou(mask, truth), None
    for piece, add in error_pieces(mask, truth)[:LOOK_AT]:
        for tool, after, cost, needs in candidates(toolset, mask, piece, add, picture, modes):
            switches = sum(settings[k] != v for k, v in needs.items())
            gain = (iou(after, truth) - score) / (cost + setting_cost * switches)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, Choice(tool, after, cost + setting_cost * switches, needs, switches, (0, 0), add), piece)
        if best is not None:
            point, _ = inner_point(best[2])
            return replace(best[1], point=point, piece=best[2])
    return None


# the canvas as it opens: the brush, the Auto mode (explicit runs start in Add), the small regions
START_SETTINGS = {"tool": "brush", "mode": "add", "region": regions.DEFAULT_SCALE}


def correct(
    picture: Picture,
    truth: np.ndarray,
    mask: np.ndarray,
    toolset: str,
    target: float,
    cap: int,
    setting_cost: int = 0,
    modes: str = "auto",
) -> dict:
    """The scripted annotator on one mask: actions (``cap`` when the target was not reached),
    per-tool counts, setting changes, IoU reached, the actions at which each IoU of
    :data:`MILESTONES` was first reached, seconds. Each step takes :func:`choose`'s action; it
    stops when none improves. A change of setting costs ``setting_cost`` actions; ``modes``: how
    the canvas is used (:data:`MODES`)."""
    start, actions, used, history = time.perf_counter(), 0, {}, shapes.History()
    settings, changes, score = dict(START_SETTINGS), 0, iou(mask, truth)
    reached = {m: 0 for m in MILESTONES if score >= m}
    while score < target and actions < cap:
        choice = choose(picture, truth, mask, toolset, settings, setting_cost, modes)
        if choice is None:
            break  # nothing helps any more: the annotator gives up on this mask
        history = history.push(mask)  # as the app does: every action can be undone
        mask, actions, score = choice.after, actions + choice.cost, iou(choice.after, truth)
        settings |= choice.needs
        changes += choice.switches
        used[choice.tool] = used.get(choice.tool, 0) + choice.cost - setting_cost * choice.switches
        reached |= {m: actions for m in MILESTONES if score >= m and m not in reached}
    seconds = time.perf_counter() - start
    return {
        "actions": actions if score >= target else max(actions, cap),
        "actions_taken": actions,
        "setting_changes": changes,
        "iou": round(score, 4),
        "reached": score >= target,
        "milestones": {str(m): reached.get(m) for m in MILESTONES},
        "tools": used,
        "seconds": seconds,
        "undo_depth": len(history),
    }


def click_options(picture: Picture) -> dict[str, dict[str, object]]:
    """Each region method of the one-click part, as :func:`annotate.edit.regions.click_region`'s options."""
    options = {f"superpixel {name}": picture.region_options(name) for name in regions.SCALES}
    options["model"] = picture.region_options("model")
    options["grabcut"] = {"method": "grabcut"}
    options["grabcut+probability"] = {"method": "grabcut", "probability": picture.probability}
    options["flood"] = {"method": "flood"}
    return options


def one_click(picture: Picture, truth: np.ndarray, mask: np.ndarray, pieces: int) -> list:
    """Part 1 on one case: per error piece and method, recall, precision, IoU gain, seconds
    (superpixels computed beforehand, as the app keeps them)."""
    rows, before = [], iou(mask, truth)
    for piece, add in error_pieces(mask, truth)[:pieces]:
        point, _ = inner_point(piece)
        for method, options in click_options(picture).items():
            start = time.perf_counter()
            region = regions.click_region(mask, picture.image, point, add, **options)
            seconds = time.perf_counter() - start
            after = mask | region if add else mask & ~region
            right = (truth if add else ~truth) & region
            rows.append(
                {
                    "method": method,
                    "add": add,
                    "piece_px": int(piece.sum()),
                    "recall": float((region & piece).sum() / piece.sum()),
                    "precision": float(right.sum() / region.sum()) if region.any() else 0.0,
                    "iou_gain": iou(after, truth) - before,
                    "seconds": seconds,
                }
            )
    return rows


def summarize(rows: list[dict], key: str, fields: tuple[str, ...], stat: Callable = np.mean) -> dict:
    out = {}
    for value in dict.fromkeys(r[key] for r in rows):
        chosen = [r for r in rows if r[key] == value]
        out[value] = {f: float(stat([float(r[f]) for r in chosen])) for f in fields} | {"n": len(chosen)}
    return out


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--target", type=float, default=0.90, help="mask IoU that counts as corrected")
    parser.add_argument("--cap", type=int, default=60, help="actions after which the annotator gives up")
    parser.add_argument("--pieces", type=int, default=4, help="error pieces per case in the one-click part")
    parser.add_argument(
        "--setting-cost", type=int, default=0, help="actions a change of tool, brush or region size costs (0 or 1)"
    )
    parser.add_argument(
        "--modes",
        choices=MODES,
        default="auto",
        help="how the canvas is used: explicit Add / Remove and the Region choice; auto (the default): the "
        "Auto mode, the click decides add or remove; shortcuts: Auto, modifier clicks for the region's source, "
        "right drags erasing and the region tool's drags painting",
    )
    parser.add_argument("--toolsets", nargs="+", choices=TOOLSETS, default=list(TOOLSETS), help="toolsets to run")
    parser.add_argument("--no-one-click", action="store_true", help="skip part 1 (the one-click table)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases (a quick look)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not (args.data / "dubai-aerial" / "tile6").is_dir():
        raise SystemExit(f"no dubai-aerial tile 6 under {args.data}: see ../shared/data/README.md")
    clicks, efforts, loads = [], [], [os.getloadavg()[0]]
    for index, (name, image, truth, mask, probability) in enumerate(cases(args.data)):
        if args.limit is not None and index >= args.limit:
            break
        start = time.perf_counter()
        picture = Picture.of(image, probability)
        prepare = time.perf_counter() - start  # superpixels of the three sizes, once per picture
        if not args.no_one_click:
            clicks += [{"case": name, **r} for r in one_click(picture, truth, mask, args.pieces)]
        for toolset in args.toolsets:
            result = correct(picture, truth, mask, toolset, args.target, args.cap, args.setting_cost, args.modes)
            result["seconds_with_superpixels"] = result["seconds"] + (prepare if toolset != "brush" else 0.0)
            efforts.append({"case": name, "toolset": toolset, "start_iou": round(iou(mask, truth), 4), **result})
            print(
                f"{name:40s} {toolset:22s} {result['actions']:3d} actions -> IoU {result['iou']:.3f} {result['tools']}",
                flush=True,
            )
        loads.append(os.getloadavg()[0])
    click_table = summarize(clicks, "method", ("recall", "precision", "iou_gain", "seconds"))
    fields = ("actions", "iou", "reached", "seconds", "seconds_with_superpixels", "setting_changes")
    effort_table = summarize(efforts, "toolset", fields, np.median)
    for name, row in effort_table.items():
        chosen = [e for e in efforts if e["toolset"] == name]
        row["reached"] = float(np.mean([e["reached"] for e in chosen]))
        row["mean_actions"] = float(np.mean([e["actions"] for e in chosen]))
        if "brush" in effort_table:
            row["fewer_than_brush"] = effort_table["brush"]["actions"] / max(row["actions"], 1e-9)
        # actions to each milestone IoU (the cap where it was never reached), median over cases
        for m in MILESTONES:
            steps = [e["milestones"][str(m)] for e in chosen]
            row[f"actions_to_{m}"] = float(np.median([args.cap if v is None else v for v in steps]))
    print("\none click (mean over error pieces)\nmethod               recall precision  IoU gain  seconds   n")
    for method, row in click_table.items():
        print(
            f"{method:20s} {row['recall']:6.3f} {row['precision']:9.3f} {row['iou_gain']:+9.4f} "
            f"{row['seconds']:8.3f} {row['n']:3d}"
        )
    print(f"\neffort to IoU >= {args.target} (cap {args.cap}; medians over cases)")
    print(
        "toolset                 actions  mean  reached  IoU    seconds (+superpixels) fewer than brush  to 0.7 / 0.8"
    )
    for toolset, row in effort_table.items():
        print(
            f"{toolset:22s} {row['actions']:8.1f} {row['mean_actions']:5.1f} {row['reached']:7.0%} "
            f"{row['iou']:6.3f} {row['seconds']:8.2f} ({row['seconds_with_superpixels']:6.2f}) "
            f"{row.get('fewer_than_brush', np.nan):6.1f}x {row['actions_to_0.7']:8.1f} {row['actions_to_0.8']:5.1f}"
        )
    print(f"load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f}")
    settings = {k: str(v) for k, v in vars(args).items() if k != "json"}
    tables = {"settings": settings, "one_click": click_table, "effort": effort_table, "clicks": clicks}
    return write_result(args.json, "correction_effort", argv, loads, {**tables, "cases": efforts})


def write_result(path: Path | None, module: str, argv: list[str] | None, loads: list[float], body: dict) -> dict:
    """The run's result: its command, CPU and load with ``body``; written as JSON to ``path`` if given."""
    result = {
        "command": f"python -m benchmarks.{module} " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_name(),
        "load_average": [min(loads), max(loads)],
        **body,
    }
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
