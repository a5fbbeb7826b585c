"""Many scenes, one command: which files are scenes, where each output goes, what may be written.

* :func:`find_inputs`: image files, folders (their raster files, not recursive) and glob
  patterns (``"archive/**/*.tif"``) -> a sorted list of files, each once.
* :func:`plan_folder`: per scene and expression, outputs named ``<scene>__<slug>.tif`` (mask),
  ``.gpkg`` (polygons), ``.probability.tif`` and ``.geojson`` in one output folder. Two
  expressions with the same slug get ``-2``, ``-3``... in the order given; two scenes with the
  same name are refused (their outputs would collide).
* :func:`check_plan`: no output is ever an input or another output; an existing file is
  replaced only with ``overwrite``, skipped with ``resume`` (outputs are published atomically,
  :func:`sbanet.geo.writers.publish`, so an existing one is complete), refused otherwise.
* :func:`shard`: scenes split over the ranks of a ``torchrun`` job, largest first to the rank
  with the fewest pixels so far, the same on every rank.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..image import TIFF_SUFFIXES

RASTER_SUFFIXES = TIFF_SUFFIXES | {".png", ".jpg", ".jpeg"}
GLOB_CHARACTERS = re.compile(r"[*?\[]")
KINDS = ("mask", "probability", "polygons", "geojson")
NAME_SUFFIXES = {"mask": ".tif", "polygons": ".gpkg", "probability": ".probability.tif", "geojson": ".geojson"}
SEPARATOR = "__"


def slug(text: str, limit: int = 40) -> str:
    """``"All buildings!"`` -> ``"all-buildings"`` (for file names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "expression"


def unique_slugs(expressions: Sequence[str]) -> list[str]:
    """One slug per expression; repeats become ``slug-2``, ``slug-3``... in the order given."""
    slugs: list[str] = []
    for expression in expressions:
        base = candidate = slug(expression)
        n = 2
        while candidate in slugs:
            candidate, n = f"{base}-{n}", n + 1
        slugs.append(candidate)
    return slugs


def _folder_images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and p.name[0] != "."]


def find_inputs(patterns: Iterable[str | Path]) -> list[Path]:
    """Files, folders and glob patterns -> the image files they name, sorted, each once.

    ``ValueError`` for a path that does not exist or a folder / pattern without images."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = _folder_images(path)
            if not matches:
                raise ValueError(f"no images ({', '.join(sorted(RASTER_SUFFIXES))}) in the folder {path}")
        elif path.exists():
            matches = [path]
        elif GLOB_CHARACTERS.search(str(pattern)):
            matches = [Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file()]
            if not matches:
                raise ValueError(f"no files match {pattern}")
        else:
            raise ValueError(f"image file not found: {path}")
        found.extend(sorted(matches))
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return sorted(unique.values())


@dataclass(frozen=True)
class SceneJob:
    """One scene's work: ``outputs[kind][k]`` is where expression k's output of that kind goes
    (None: not wanted); ``done`` holds those that already exist and are kept (``--resume``)."""

    image: Path
    name: str
    outputs: dict[str, list[Path | None]]
    done: frozenset[Path] = frozenset()

    def paths(self) -> list[Path]:
        return [p for kind in KINDS for p in self.outputs.get(kind, ()) if p is not None]

    def pending(self, kind: str) -> list[Path | None]:
        """Per expression: the path to write this run, or None (not wanted, or already done)."""
        return [None if p in self.done else p for p in self.outputs.get(kind, ())]

    @property
    def finished(self) -> bool:
        return all(p in self.done for p in self.paths())


def plan_folder(
    images: Sequence[Path], expressions: Sequence[str], folder: Path, kinds: Sequence[str]
) -> list[SceneJob]:
    """One :class:`SceneJob` per image, outputs in ``folder`` named by the rule above."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown output kinds {unknown}: choose from {', '.join(KINDS)}")
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"two scenes are named {image.stem!r} ({seen[image.stem]}, {image}): rename one")
        seen[image.stem] = image
    slugs = unique_slugs(expressions)
    return [
        SceneJob(
            image,
            image.stem,
            {kind: [folder / f"{image.stem}{SEPARATOR}{s}{NAME_SUFFIXES[kind]}" for s in slugs] for kind in kinds},
        )
        for image in images
    ]


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: not the same file
        return False


def check_plan(
    jobs: Sequence[SceneJob], extra: Sequence[Path] = (), *, overwrite: bool = False, resume: bool = False
) -> list[SceneJob]:
    """The jobs, with the outputs that already exist marked ``done`` under ``resume`` (not
    with ``overwrite``, which replaces them).

    ``ValueError`` when an output is an input, two outputs share a path, or an output exists
    and neither ``overwrite`` nor ``resume`` is given. ``extra``: files the run rewrites in
    full either way (the summary), checked the same way but never skipped."""
    inputs = [job.image for job in jobs]
    outputs = [p for job in jobs for p in job.paths()] + list(extra)
    taken: dict[Path, Path] = {}
    for path in outputs:
        key = path.resolve()
        if key in taken:
            raise ValueError(f"two outputs would be written to {path}")
        taken[key] = path
        clash = next((i for i in inputs if _same(path, i)), None)
        if clash is not None:
            raise ValueError(f"the output {path} is the input image {clash}: choose another output name")
    existing = next((p for p in outputs if p.exists()), None)
    if existing is not None and not (overwrite or resume):
        raise ValueError(f"{existing} exists: pass --overwrite to replace it or --resume to skip finished work")
    if not resume or overwrite:
        return list(jobs)
    return [replace(job, done=frozenset(p for p in job.paths() if p.exists())) for job in jobs]


def make_folders(paths: Iterable[Path]) -> list[Path]:
    """Create the folders outputs go to; ``ValueError`` (one line) when that is impossible.

    Returns the folders this call created, deepest first (:func:`remove_empty_folders` undoes
    them when a run is refused before it writes anything)."""
    created: list[Path] = []
    for folder in sorted({p.parent for p in paths}):
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            remove_empty_folders(created)
            raise ValueError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
        created += missing
    return sorted(set(created), key=lambda f: len(f.parts), reverse=True)


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is still empty; others stay."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


def shard(jobs: Sequence[SceneJob], sizes: Sequence[int], rank: int, world_size: int) -> list[SceneJob]:
    """This rank's jobs: largest scene (``sizes``, pixels) first, each to the least-loaded rank
    (ties: the lowest rank), in the jobs' own order. Every rank computes the same split."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    load = [0] * world_size
    owner = [0] * len(jobs)
    for i in sorted(range(len(jobs)), key=lambda i: (-sizes[i], i)):
        owner[i] = min(range(world_size), key=lambda r: (load[r], r))
        load[owner[i]] += sizes[i]
    return [job for i, job in enumerate(jobs) if owner[i] == rank]


def output_paths(path: Path | None, expressions: Sequence[str]) -> list[Path | None]:
    """One path per expression: ``path`` itself for one, ``stem_<slug>.ext`` for several."""
    if path is None:
        return [None] * len(expressions)
    if len(expressions) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{s}{path.suffix}") for s in unique_slugs(expressions)]
