"""The seam between the app's handlers and the library: one shared model and the store.

Handlers call a :class:`Backend` and get plain values back (numpy arrays, dataclasses, dicts),
never ORM objects or open sessions; each method is one short transaction on the store
(:mod:`annotate.store.repository`, :mod:`annotate.store.runs`). Tests replace the backend with a fake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbanet.checkpoint import checkpoint_metadata
from sbanet.geo.raster import geo_metadata
from sbanet.inference.gsd import TrainingGSD
from sbanet.inference.predictor import Predictor

from ..jobs.finetune_data import FinetuneConfig, select_masks
from ..jobs.hub import backup_to_hub
from ..jobs.queue import FinetuneJobs
from ..store import repository as repo
from ..store import runs
from ..store.database import Store
from ..store.export import export_store
from ..store.masks import decode_mask, mean_uncertainty
from .downloads import Downloads
from .inputs import LoadedImage


@dataclass(frozen=True)
class ModelRef:
    """Which model version made a prediction (recorded with it in the store)."""

    version_id: int | None
    name: str


class SharedModel:
    """The one predictor all users share, loaded at start-up and swapped when a new model
    version is activated (requests already running finish on the old one)."""

    def __init__(self, load: Callable[[str], Predictor] = Predictor.from_pretrained) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._predictor: Predictor | None = None
        self.source: str | None = None
        self.version_id: int | None = None
        self.name = "no model loaded"
        self.metadata: dict[str, Any] = {}  # the checkpoint's config.json metadata (calibrated thresholds)

    def load(self, source: str) -> Predictor:
        """Load a checkpoint (directory, file or hub id) without making it active yet."""
        return self._load(source)

    def install(self, predictor: Predictor, source: str, version_id: int | None, name: str) -> None:
        """Make ``predictor`` the model every user gets from now on."""
        metadata = checkpoint_metadata(source) if Path(source).exists() else {}
        with self._lock:
            self._predictor, self.source, self.version_id, self.name = predictor, source, version_id, name
            self.metadata = metadata

    def current(self) -> tuple[Predictor, ModelRef]:
        """The predictor and which version it is, read together (a swap cannot come between)."""
        with self._lock:
            if self._predictor is None:
                raise ValueError("no model is loaded yet; the app loads one at start-up")
            return self._predictor, ModelRef(self.version_id, self.name)


@dataclass(frozen=True)
class Recorded:
    """Where a segmentation was saved: the image, and per expression its id and mask version."""

    image_id: int
    expression_ids: list[int]
    mask_version_ids: list[int]


@dataclass(frozen=True)
class Item:
    """One mask version to look at or correct, with its image and expression."""

    mask_version_id: int
    expression_id: int
    image_id: int
    expression: str
    image_name: str
    image_path: Path
    sha256: str
    mask: np.ndarray  # bool [H, W]
    status: str
    kind: str
    georeferenced: bool


class Backend:
    """Everything the handlers need; one instance serves all users (no per-user state)."""

    def __init__(self, store: Store, model: SharedModel, downloads: Downloads | None = None) -> None:
        self.store = store
        self.model = model
        self.downloads = downloads or Downloads()
        self.jobs = FinetuneJobs(store)

    # --- model ------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def model_label(self) -> str:
        """What runs, for the header: ``"sbanet-lite-landcover · cpu · fp32"`` (the name alone before a load)."""
        try:
            predictor, ref = self.model.current()
        except ValueError:
            return self.model.name
        return predictor.label(ref.name)

    @property
    def model_metadata(self) -> dict[str, Any]:
        """The active checkpoint's metadata (``"confidence"``: its calibrated thresholds)."""
        return self.model.metadata

    @property
    def training_gsd(self) -> TrainingGSD | None:
        """The active model's training GSD (None: it records none; :mod:`sbanet.inference.gsd`)."""
        return self.model.current()[0].training_gsd

    def predict(
        self, image: np.ndarray, expressions: Sequence[str], threshold: float = 0.5, gsd: Any = None
    ) -> tuple[list[Any], ModelRef]:
        """``uint8 [H, W, 3]`` image + expressions -> one :class:`~sbanet.inference.predictor.Prediction`
        each, and the model version that made them (``gsd``: the image's metres per pixel,
        resampled to the model's training GSD)."""
        predictor, model = self.model.current()
        return predictor.predict_batch(image, list(expressions), threshold=threshold, gsd=gsd), model

    def load_model(self, source: str | None) -> int:
        """Load ``source`` (a checkpoint directory or hub id; None: the store's active model),
        register it as a model version if new, make it active for every user; returns its id."""
        if source is None:
            with self.store.Session.begin() as session:
                active = runs.active_model(session)
                if active is None:
                    raise ValueError("no model given and none is active in the store")
                source = runs.checkpoint_source(self.store.files, active)
        checkpoint = str(Path(source).resolve()) if Path(source).exists() else source
        predictor = self.model.load(checkpoint)  # slow; no transaction open meanwhile
        with self.store.Session.begin() as session:
            known = [
                m
                for m in runs.list_model_versions(session)
                if _same_checkpoint(runs.checkpoint_source(self.store.files, m), checkpoint)
            ]
            if known:
                version = known[-1]
            else:
                name = Path(checkpoint).name if Path(checkpoint).exists() else checkpoint
                version = runs.add_model_version(
                    session,
                    name=name,
                    checkpoint=runs.stored_checkpoint(self.store.files, checkpoint),
                    preset=predictor.config.name,
                )
            runs.activate_model(session, version.id)
            version_id, name = version.id, version.name
        self.model.install(predictor, checkpoint, version_id, name)
        return version_id

    # --- images, expressions, predictions ----------------------------------------------------
    def record_segmentation(
        self, image: LoadedImage, predictions: Sequence[Any], model: ModelRef, author: str
    ) -> Recorded:
        """Store the image, each expression and its predicted mask by ``model`` (a draft for review).

        The same image and text reuse their rows; a prediction identical to the expression's
        newest one by the same model is not stored twice.
        """
        with self.store.Session.begin() as session:
            row = repo.add_image(session, self.store.files, image.path, filename=image.name)
            expression_ids, version_ids = [], []
            for prediction in predictions:
                expression = repo.find_expression(session, row.id, prediction.expression)
                if expression is None:
                    expression = repo.add_expression(session, row.id, prediction.expression, author=author)
                newest = repo.latest_mask(session, expression.id)
                if (
                    newest is not None
                    and newest.kind == "prediction"
                    and newest.model_version_id == model.version_id
                    and np.array_equal(repo.mask_array(newest), prediction.mask)
                ):
                    version = newest
                else:
                    version = repo.add_mask_version(
                        session,
                        expression.id,
                        prediction.mask,
                        kind="prediction",
                        author=author,
                        model_version_id=model.version_id,
                        status="draft",
                        uncertainty=mean_uncertainty(prediction.probability),
                    )
                expression_ids.append(expression.id)
                version_ids.append(version.id)
            return Recorded(row.id, expression_ids, version_ids)

    def item(self, mask_version_id: int) -> Item:
        with self.store.ReadSession() as session:
            version = repo.get_mask_version(session, mask_version_id)
            expression = version.expression
            image = expression.image
            return Item(
                mask_version_id=version.id,
                expression_id=expression.id,
                image_id=image.id,
                expression=expression.text,
                image_name=image.filename,
                image_path=self.store.files.path(image.path),
                sha256=image.sha256,
                mask=decode_mask(version.rle, version.height, version.width),
                status=version.status,
                kind=version.kind,
                georeferenced=image.georeferenced,
            )

    # --- corrections and review --------------------------------------------------------------
    def save_correction(
        self, parent_id: int, mask: np.ndarray, author: str, note: str | None = None, request_id: str | None = None
    ) -> int:
        """A corrected mask as a new version (status "submitted") of ``parent_id``'s expression;
        a ``request_id`` already saved returns that save's version (a retry, see the repository)."""
        with self.store.Session.begin() as session:
            parent = repo.get_mask_version(session, parent_id)
            version = repo.add_mask_version(
                session,
                parent.expression_id,
                mask,
                kind="correction",
                author=author,
                parent_id=parent.id,
                status="submitted",
                note=note or None,
                request_id=request_id,
            )
            return version.id

    def set_status(self, mask_version_id: int, status: str, author: str, note: str | None = None) -> str:
        with self.store.Session.begin() as session:
            return repo.set_status(session, mask_version_id, status, author=author, note=note or None).status

    def history(self, expression_id: int) -> list[dict[str, Any]]:
        """Every version of an expression's mask, newest first, as table rows."""
        with self.store.ReadSession() as session:
            return [_version_row(v) for v in reversed(repo.history(session, expression_id))]

    def review_queue(self, status: str, order: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.store.ReadSession() as session:
            return [_version_row(v) for v in repo.review_queue(session, status, order, limit)]

    def status_counts(self) -> dict[str, int]:
        """``{status: number of expressions whose newest mask has it}`` (the review progress)."""
        with self.store.ReadSession() as session:
            return repo.status_counts(session)

    # --- models and fine-tuning --------------------------------------------------------------
    def model_versions(self) -> list[dict[str, Any]]:
        """Every registered model version (newest first) with its held-out metrics."""
        with self.store.ReadSession() as session:
            return [
                {
                    "model_version": m.id,
                    "name": m.name,
                    "preset": m.preset,
                    "parent": m.parent_id,
                    "active": bool(m.active),
                    "mIoU": _metric(m.metrics, "mIoU"),
                    "oIoU": _metric(m.metrics, "oIoU"),
                    "created": f"{m.created_at:%Y-%m-%d %H:%M:%S}",
                }
                for m in reversed(runs.list_model_versions(session))
            ]

    def activate_version(self, model_version_id: int) -> str:
        """Load a model version and make it the one every user segments with; returns its name."""
        with self.store.ReadSession() as session:
            version = runs.get_model_version(session, model_version_id)
            source, name = runs.checkpoint_source(self.store.files, version), version.name
        predictor = self.model.load(source)
        with self.store.Session.begin() as session:
            runs.activate_model(session, model_version_id)
        self.model.install(predictor, source, model_version_id, name)
        return name

    def active_version(self) -> dict[str, Any] | None:
        """The store's active model version: ``{"id", "name", "parent"}`` (None when none is)."""
        with self.store.ReadSession() as session:
            active = runs.active_model(session)
            return None if active is None else {"id": active.id, "name": active.name, "parent": active.parent_id}

    def version_predictor(self, model_version_id: int) -> Predictor:
        """A model version's predictor: the shared one when it is the active version, else loaded."""
        predictor, model = self.model.current()
        if model.version_id == model_version_id:
            return predictor
        with self.store.ReadSession() as session:
            source = runs.checkpoint_source(self.store.files, runs.get_model_version(session, model_version_id))
        return self.model.load(source)

    def finetune_masks(self, config: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The accepted masks a run with ``config`` would train on and be measured on, as rows."""
        train_ids, held_out_ids = select_masks(self.store, config)
        with self.store.ReadSession() as session:
            return (
                [_version_row(repo.get_mask_version(session, i)) for i in train_ids],
                [_version_row(repo.get_mask_version(session, i)) for i in held_out_ids],
            )

    # --- export -------------------------------------------------------------------------------
    def export(self, fmt: str, selection: str) -> tuple[str, Any]:
        """The store's masks in ``fmt`` (see :mod:`annotate.store.export`) as a fresh zip file."""
        folder = self.downloads.new_dir() / f"sbanet-{fmt}-{selection}"
        summary = export_store(self.store, folder, fmt, selection=selection)
        return self.downloads.zip_folder(folder, folder.name), summary

    def mask_files(self, mask_version_id: int) -> list[str]:
        """One mask version as PNG, plus GeoTIFF / GeoPackage / GeoJSON for a georeferenced image."""
        with self.store.ReadSession() as session:
            version = repo.get_mask_version(session, mask_version_id)
            image = version.expression.image
            mask, expression = repo.mask_array(version), version.expression.text
            geo = geo_metadata(self.store.files.path(image.path)) if image.georeferenced else None
            stem = f"{Path(image.filename).stem}-v{version.id}"
            model = version.model_version.name if version.model_version is not None else version.author
        return self.downloads.mask_files(stem, [(expression, mask)], geo, model)

    def backup_to_hub(self, repo_id: str) -> dict[str, Any]:
        return backup_to_hub(self.store, repo_id)


def _metric(metrics: dict[str, Any] | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return None if value is None else round(float(value), 4)


def _same_checkpoint(a: str, b: str) -> bool:
    """Two checkpoint locations name the same thing (local paths compared resolved)."""
    if Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def _version_row(version: Any) -> dict[str, Any]:
    expression = version.expression
    return {
        "mask_version": version.id,
        "expression_id": expression.id,
        "image": expression.image.filename,
        "expression": expression.text,
        "kind": version.kind,
        "status": version.status,
        "author": version.author,
        "area_px": version.area,
        "uncertainty": None if version.uncertainty is None else round(version.uncertainty, 4),
        "parent": version.parent_id,
        "created": f"{version.created_at:%Y-%m-%d %H:%M:%S}",
    }
