"""Content-addressed files in the data folder, written atomically.

An image is stored once as ``images/<sha[:2]>/<sha256><ext>``. Files are written to a temporary
name in the target folder, fsynced, then renamed into place (``os.replace`` is atomic), so a crash
leaves either no file or the whole file, never a truncated one. Callers insert the database row
that refers to a file only after :meth:`FileStore.put` returned, so no row ever points at a
missing file; a crash between the two leaves an unreferenced file, which is harmless (a re-upload
of the same content reuses it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}


CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes | Path) -> None:
    """Write ``data`` (bytes, or a file copied in chunks) to ``path`` via a temporary file +
    rename, durable once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    shutil.copyfileobj(source, handle, CHUNK)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(data: bytes | Path) -> str:
    """The sha256 of bytes, or of a file read in chunks (multi-GB scenes never sit in memory)."""
    if not isinstance(data, Path):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStore:
    """The data folder: the SQLite file (by default), images, model checkpoints, exports."""

    root: Path

    def path(self, relative: str) -> Path:
        """The absolute path of a stored file (``relative`` as kept in the database)."""
        return self.root / relative

    def image_key(self, sha256: str, suffix: str) -> str:
        return f"images/{sha256[:2]}/{sha256}{suffix}"

    def put(self, data: bytes | Path, suffix: str, sha256: str | None = None) -> tuple[str, str, bool]:
        """Store bytes or a file's content by its sha256 (computed unless given); returns
        (sha256, relative path, whether the file was new)."""
        sha = sha256 or file_sha256(data)
        relative = self.image_key(sha, suffix)
        target = self.path(relative)
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if target.is_file() and target.stat().st_size == size:
            return sha, relative, False
        write_atomic(target, data)
        return sha, relative, True

    def remove(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(relative).unlink()

    @property
    def models(self) -> Path:
        """Where fine-tuned checkpoints are written (one folder per model version)."""
        return self.root / "models"


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    bands: int
    dtype: str
    crs: str | None
    transform: list[float] | None


def probe_image(path: Path) -> ImageInfo:
    """Size, bands and dtype as the model reads the file (:func:`sbanet.image.read_image`), plus
    the CRS and affine transform of a georeferenced TIFF (:func:`sbanet.geo.raster.geo_metadata`).

    A TIFF is probed from its header alone and refused when it would decode to more than
    :data:`sbanet.image.MAX_DECODED_BYTES`; other formats are decoded by Pillow (at most four
    bands, within its decompression-bomb limit), which also proves them readable.
    """
    from sbanet.image import MAX_DECODED_BYTES, check_decoded_bytes, read_image, tiff_header

    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    header = tiff_header(path) if is_tiff else None
    if header is not None:
        shape, dtype = header
    else:
        array = read_image(path)  # ValueError for unreadable files
        shape, dtype = array.shape, array.dtype
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(f"{path.name} is not a 2-D image (shape {shape})")
    bands = 1 if len(shape) == 2 else int(shape[2])
    check_decoded_bytes(shape[0], shape[1], bands, dtype, path.name, MAX_DECODED_BYTES)
    crs, transform = _georeference(path) if is_tiff else (None, None)
    return ImageInfo(
        width=int(shape[1]),
        height=int(shape[0]),
        bands=bands,
        dtype=str(np.dtype(dtype)),
        crs=crs,
        transform=transform,
    )


def _georeference(path: Path) -> tuple[str | None, list[float] | None]:
    from sbanet.geo.raster import geo_metadata

    try:
        info = geo_metadata(path)
    except ValueError:  # a TIFF GDAL cannot open (tifffile or Pillow could): no georeferencing
        return None, None
    if not info.is_georeferenced:
        return None, None
    return info.crs, [float(v) for v in info.transform]
