"""Files the app hands to users: always freshly written, never a path a user sent in.

Each request writes into its own new folder under one temporary root; folders older than
``max_age_s`` are removed the next time one is created, so a long-running app does not fill
the disk. A root this class made itself (``sbanet-app-*`` in the system temp folder) is removed
with everything in it by :meth:`Downloads.close`, which also runs when the object is collected
or the interpreter exits. Gradio copies returned files into its own cache before serving them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from sbanet.geo.raster import GeoInfo
from sbanet.geo.vector import mask_to_polygons, write_geojson, write_geopackage
from sbanet.geo.writers import write_mask_geotiff, write_mask_png
from sbanet.predict import slug


class Downloads:
    """A temporary root for per-request output folders (see the module docstring)."""

    def __init__(self, root: str | Path | None = None, max_age_s: float = 3600.0) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sbanet-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        # only a folder made here is ours to delete (a given root may hold other files)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True) if root is None else None

    def close(self) -> None:
        """Remove the temporary root this object made (a given ``root`` is left in place)."""
        if self._cleanup is not None:
            self._cleanup()

    def new_dir(self) -> Path:
        """A new, empty folder for one request's files (and prune the old ones)."""
        now = time.time()
        for old in self.root.iterdir():
            if old.is_dir() and now - old.stat().st_mtime > self.max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.root))

    def mask_files(
        self, stem: str, masks: list[tuple[str, np.ndarray]], geo: GeoInfo | None = None, model: str = ""
    ) -> list[str]:
        """Each ``(expression, bool [H, W])`` as ``<stem>-<n>-<expression>.png`` (0/255) and, for a
        georeferenced image, also as a mask GeoTIFF on its grid, polygons in a GeoPackage (its
        CRS) and GeoJSON (WGS 84), with the expression and model as attributes."""

        folder = self.new_dir()
        paths: list[Path] = []
        for index, (expression, mask) in enumerate(masks):
            base = folder / f"{slug(stem) if stem else 'image'}-{index + 1}-{slug(expression)}"
            paths.append(write_mask_png(base.with_suffix(".png"), mask))
            if geo is None:
                continue
            paths.append(write_mask_geotiff(base.with_suffix(".tif"), mask, geo))
            polygons = mask_to_polygons(mask, geo.transform)
            attributes = {"expression": expression, "model": model}
            paths.append(write_geopackage(base.with_suffix(".gpkg"), polygons, geo.crs, attributes))
            paths.append(write_geojson(base.with_suffix(".geojson"), polygons, geo.crs, attributes))
        return [str(p) for p in paths]

    def zip_folder(self, folder: Path, name: str) -> str:
        """``folder`` as ``<name>.zip`` in a fresh folder."""
        archive = shutil.make_archive(str(self.new_dir() / name), "zip", root_dir=folder)
        return archive

    def copy(self, source: str | Path, name: str | None = None) -> str:
        """Copy a file the app produced (e.g. an export) into a fresh folder and return the copy."""
        source = Path(source)
        target = self.new_dir() / (name or source.name)
        shutil.copyfile(source, target)
        return str(target)
