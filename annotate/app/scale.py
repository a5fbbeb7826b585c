"""The Segment tab's ground sampling distance field: at which scale an upload is segmented.

The field takes the upload's metres per pixel (``0.5``), ``auto`` (a GeoTIFF's own GSD, read from
its CRS and transform: :func:`sbanet.geo.resolution.raster_gsd`), or nothing / ``off`` (the image
resized to the model's input size, as always). With a GSD the predictor resamples the image to
the model's training GSD (:meth:`sbanet.inference.predictor.Predictor.predict_batch`); the result
says which scale was used and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sbanet.geo.resolution import raster_gsd
from sbanet.inference.gsd import TrainingGSD, check_gsd, no_scale_note, plan_scale
from sbanet.inference.predictor import MAX_SCALED_SIDE

from .inputs import LoadedImage

AUTO = "auto"
OFF = "off"
# blank: the GSD is not used. Resampling whole images to the training GSD scored below the plain
# resize the app does on SpaceNet (mean IoU, v4: 0.162 vs 0.180; v5 at its 1.705 m: 0.124 vs
# 0.136) and GID (v4: 0.184 vs 0.242; v5: 0.408 vs 0.530) and about the same on Dubai tile 6 (v4:
# 0.510 vs 0.508; v5: 0.527 vs 0.514): docs/results.md, "Ground sampling distance". The scene
# command's tiles are where it helps, and it is on there for GeoTIFFs.
BLANK_MEANS = OFF


@dataclass(frozen=True)
class ScaleChoice:
    """The GSD to pass to the predictor (None: the plain resize) and, for people, why."""

    gsd: tuple[float, float] | None
    note: str


def parse_field(text: Any) -> float | str:
    """The field as typed: a checked number of metres per pixel, :data:`AUTO` or :data:`OFF`
    (blank: :data:`BLANK_MEANS`); ``ValueError`` for anything else."""
    value = str(text or "").strip().lower().removesuffix("m/px").removesuffix("m").strip()
    if not value:
        return BLANK_MEANS
    if value in (AUTO, OFF):
        return value
    return check_gsd(value, "the ground sampling distance")


def choose_scale(image: LoadedImage, text: Any, training: TrainingGSD | None) -> ScaleChoice:
    """The :class:`ScaleChoice` for ``image`` and the field's ``text`` with a model trained at
    ``training`` (None: it records no training GSD). A typed number for such a model is refused
    (``ValueError``); ``auto`` then falls back to the plain resize and says so."""
    field = parse_field(text)
    if field == OFF:
        return ScaleChoice(None, no_scale_note(training, None, off=True))
    if isinstance(field, float):
        if training is None:
            raise ValueError("this model records no training GSD, so it cannot resample to it: leave the field blank")
        return ScaleChoice((field, field), f"scale: {field:g} m/px as typed")
    if image.geo is None:
        return ScaleChoice(None, "scale: the upload states no GSD (not a GeoTIFF): resized to the input size")
    reading = raster_gsd(image.geo)
    if training is None or reading.gsd is None:
        return ScaleChoice(None, f"{no_scale_note(training, reading.gsd)} ({reading.reason})")
    plan = plan_scale(image.rgb.shape[:2], reading.gsd, training)
    if max(plan.resampled) > MAX_SCALED_SIDE:  # a scene: the command line tiles it
        return ScaleChoice(None, f"scale: at the model's GSD this GeoTIFF is over {MAX_SCALED_SIDE} px: resized")
    return ScaleChoice(reading.gsd, f"scale: the GeoTIFF's {reading.describe()}")
