"""The annotation store: schema migrations, images, expressions, append-only mask history,
review, model versions and fine-tune runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from store_backends import BACKENDS, backend_url, png_bytes

from annotate import make_store
from annotate.store import repository as repo
from annotate.store import runs
from annotate.store.models import Base, MaskVersion


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    for url in backend_url(request.param, tmp_path):
        with make_store(url, tmp_path / "data") as opened:
            yield opened


@pytest.fixture
def expression(store):
    with store.Session.begin() as session:
        image = repo.add_image(session, store.files, png_bytes(), "scene.png")
        return repo.add_expression(session, image.id, "the red roof", author="ana").id


# --- schema -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_build_exactly_the_models(backend, tmp_path):
    """Upgrading an empty database to head gives the models' schema: Alembic finds no diff.
    A downgrade to nothing and a second upgrade work too."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from annotate.store.database import alembic_config, schema_revision

    for url in backend_url(backend, tmp_path):
        store = make_store(url, tmp_path / "data")
        current, heads = schema_revision(store.engine)
        assert current == heads and len(heads) == 1
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        with store.engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert schema_revision(store.engine)[0] == set()
        store.close()
        with make_store(url, tmp_path / "data") as again, again.Session.begin() as session:
            assert session.scalar(text("SELECT count(*) FROM mask_version")) == 0


def test_default_sqlite_store_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SBANET_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.delenv("SBANET_STORE_URL", raising=False)
    with make_store() as store:
        assert store.data_dir == tmp_path / "from-env"
        assert (store.data_dir / "store.sqlite").is_file()
        with store.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30000
        with pytest.raises(IntegrityError), store.engine.begin() as connection:  # foreign keys are enforced
            connection.exec_driver_sql(
                "INSERT INTO expression (image_id, text, source, author, split, created_at) "
                "VALUES (999, 'x', 'typed', 'a', 'train', '2024-01-01')"
            )


# --- images and expressions -------------------------------------------------------------------
def test_images_are_content_addressed_and_stored_once(store):
    data = png_bytes(24, 32, seed=1)
    with store.Session.begin() as session:
        first = repo.add_image(session, store.files, data, "a.png")
        again = repo.add_image(session, store.files, data, "renamed.png")
        other = repo.add_image(session, store.files, png_bytes(24, 32, seed=2), "b.png")
    assert again.id == first.id and other.id != first.id
    assert first.path == f"images/{first.sha256[:2]}/{first.sha256}.png"
    assert store.files.path(first.path).read_bytes() == data
    assert (first.filename, first.width, first.height, first.bands, first.dtype) == ("a.png", 32, 24, 3, "uint8")
    assert first.crs is None and first.transform is None
    assert len(list((store.data_dir / "images").rglob("*.png"))) == 2


def test_geotiff_keeps_crs_and_transform(store, tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    transform = from_origin(500000.0, 4200000.0, 0.5, 0.5)
    profile = dict(driver="GTiff", width=40, height=30, count=4, dtype="uint16", crs="EPSG:32616", transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 4000, (4, 30, 40), dtype=np.uint16))
    with store.Session.begin() as session:
        image = repo.add_image(session, store.files, path)
    assert (image.width, image.height, image.bands, image.dtype) == (40, 30, 4, "uint16")
    assert image.crs == "EPSG:32616" and image.georeferenced
    assert image.transform == pytest.approx(list(transform)[:6])


def test_unreadable_image_leaves_no_row_and_no_file(store):
    with store.Session.begin() as session, pytest.raises(ValueError, match="cannot read"):
        repo.add_image(session, store.files, b"not an image at all", "broken.png")
    with store.Session.begin() as session:
        assert session.scalar(text("SELECT count(*) FROM image")) == 0
    assert not list((store.data_dir / "images").rglob("*.png"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, i: repo.add_expression(s, 999, "the roof", author="ana"), "unknown image id 999"),
        (lambda s, i: repo.add_expression(s, i, "   ", author="ana"), "expression is empty"),
        (lambda s, i: repo.add_expression(s, i, "the roof", author=""), "author is required"),
        (lambda s, i: repo.add_expression(s, i, "the roof", author="a", split="dev"), "split must be one of"),
        (lambda s, i: repo.add_expression(s, i, "the roof", author="a", source="x"), "source must be one of"),
        (lambda s, i: repo.add_image(s, None, b"x", None), "needs the original filename"),
        (lambda s, i: repo.add_image(s, None, b"x", "a.gif"), "unsupported image type"),
    ],
)
def test_expression_and_image_validation(store, call, message):
    with store.Session.begin() as session:
        image = repo.add_image(session, store.files, png_bytes(), "scene.png")
        with pytest.raises(ValueError, match=message):
            call(session, image.id)


def test_default_split_is_stable_and_holds_out_about_a_fifth():
    splits = [repo.default_split("ab" * 32, f"the object number {i}") for i in range(2000)]
    assert splits == [repo.default_split("ab" * 32, f"the object number {i}") for i in range(2000)]
    assert 0.17 < splits.count("val") / len(splits) < 0.23


# --- masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((24, 31), bool), "24x31 .* image is 24x32"),
        (np.full((24, 32), 2, np.uint8), "not binary: values 2"),
        (np.full((24, 32), 0.5, np.float32), "not binary"),
        (np.zeros((24, 32, 3), bool), "2-D array"),
        (np.array([["a"] * 32] * 24), "boolean or numeric"),
    ],
)
def test_bad_masks_are_refused(store, expression, mask, message):
    with store.Session.begin() as session, pytest.raises(ValueError, match=message):
        repo.add_mask_version(session, expression, mask, kind="correction", author="ana")


def test_unknown_references_are_refused(store, expression):
    mask = np.zeros((24, 32), bool)
    with store.Session.begin() as session:
        with pytest.raises(ValueError, match="unknown expression id 77"):
            repo.add_mask_version(session, 77, mask, kind="correction", author="ana")
        with pytest.raises(ValueError, match="unknown parent mask version id 5"):
            repo.add_mask_version(session, expression, mask, kind="correction", author="ana", parent_id=5)
        with pytest.raises(ValueError, match="needs the model_version_id"):
            repo.add_mask_version(session, expression, mask, kind="prediction", author="model")
        with pytest.raises(ValueError, match="kind must be one of"):
            repo.add_mask_version(session, expression, mask, kind="guess", author="ana")


@pytest.mark.parametrize("encoding", ["bool", "0/1 int", "0/255 uint8"])
def test_masks_round_trip_losslessly(store, expression, encoding):
    rng = np.random.default_rng(3)
    mask = rng.random((24, 32)) < 0.3
    given = {"bool": mask, "0/1 int": mask.astype(np.int64), "0/255 uint8": mask.astype(np.uint8) * 255}[encoding]
    with store.Session.begin() as session:
        version = repo.add_mask_version(session, expression, given, kind="correction", author="ana")
    with store.Session.begin() as session:
        stored = repo.get_mask_version(session, version.id)
        np.testing.assert_array_equal(repo.mask_array(stored), mask)
        assert stored.area == int(mask.sum())


def test_history_is_append_only_and_reviews_are_recorded(store, expression):
    with store.Session.begin() as session:
        model = runs.add_model_version(session, name="base", checkpoint="/ckpt", preset="sbanet_tiny")
        predicted = np.zeros((24, 32), bool)
        predicted[2:10, 3:12] = True
        first = repo.add_mask_version(
            session, expression, predicted, kind="prediction", author="model", model_version_id=model.id
        )
        corrected = predicted.copy()
        corrected[10:14, 3:12] = True
        second = repo.add_mask_version(
            session, expression, corrected, kind="correction", author="ana", parent_id=first.id, status="submitted"
        )
        repo.set_status(session, second.id, "accepted", author="bo", note="looks right")
    with store.Session() as session:
        versions = repo.history(session, expression)
        assert [v.id for v in versions] == [first.id, second.id]
        np.testing.assert_array_equal(repo.mask_array(versions[0]), predicted)  # never overwritten
        assert versions[1].parent_id == first.id and versions[0].model_version_id == model.id
        events = [(e.from_status, e.to_status, e.author, e.note) for e in versions[1].events]
        assert events == [(None, "submitted", "ana", None), ("submitted", "accepted", "bo", "looks right")]
        assert repo.latest_mask(session, expression).id == second.id
        assert repo.latest_mask(session, expression, kind="prediction").id == first.id
        # the ORM refuses to rewrite or delete a stored version
        stored = session.get(MaskVersion, first.id)
        stored.rle = b"0"
        with pytest.raises(ValueError, match="append-only"):
            session.flush()
        session.rollback()
        session.delete(session.get(MaskVersion, first.id))
        with pytest.raises(ValueError, match="cannot be deleted"):
            session.flush()


def test_review_queue_orders_by_uncertainty_or_recency(store):
    with store.Session.begin() as session:
        image = repo.add_image(session, store.files, png_bytes(), "scene.png")
        model = runs.add_model_version(session, name="base", checkpoint="/ckpt", preset="sbanet_tiny")
        ids = {}
        for name, uncertainty in [("a", 0.1), ("b", 0.4), ("c", None), ("d", 0.2)]:
            expression = repo.add_expression(session, image.id, f"object {name}", author="ana")
            ids[name] = repo.add_mask_version(
                session,
                expression.id,
                np.zeros((24, 32), bool),
                kind="prediction",
                author="model",
                model_version_id=model.id,
                status="submitted",
                uncertainty=uncertainty,
            ).id
        repo.set_status(session, ids["d"], "accepted", author="bo")
    with store.Session() as session:
        uncertain = [v.id for v in repo.review_queue(session, order="uncertain")]
        assert uncertain == [ids["b"], ids["a"], ids["c"]]
        assert [v.id for v in repo.review_queue(session, order="recent")] == [ids["c"], ids["b"], ids["a"]]
        assert [v.id for v in repo.review_queue(session, status="accepted")] == [ids["d"]]
        assert [v.id for v in repo.newest_versions(session, status="accepted")] == [ids["d"]]
        with pytest.raises(ValueError, match="order must be one of"):
            repo.review_queue(session, order="random")


# --- model versions and runs ------------------------------------------------------------------
def test_one_active_model_version(store):
    with store.Session.begin() as session:
        a = runs.add_model_version(session, name="a", checkpoint="/a", preset="sbanet_tiny", active=True)
        b = runs.add_model_version(session, name="b", checkpoint="/b", preset="sbanet_tiny", parent_id=a.id)
        runs.activate_model(session, b.id)
        assert runs.active_model(session).id == b.id
        assert session.get(type(a), a.id).active is None
    with pytest.raises(IntegrityError), store.Session.begin() as session:  # the database enforces it too
        session.execute(text("UPDATE model_version SET active = true"))


def test_run_lifecycle_cancel_and_stale_recovery(store, expression):
    with store.Session.begin() as session:
        base = runs.add_model_version(session, name="base", checkpoint="/ckpt", preset="sbanet_tiny")
        run = runs.create_run(session, base.id, {"steps": 10}, author="ana")
        queued = runs.create_run(session, base.id, {"steps": 10}, author="ana")
        version = repo.add_mask_version(session, expression, np.ones((24, 32), bool), kind="correction", author="a")
    with store.Session.begin() as session:
        runs.claim_run(session, run.id)
        runs.set_run_masks(session, run.id, train=[version.id], evaluate=[])
        runs.record_progress(session, run.id, 0.5, "training", "step 5/10")
        assert runs.request_cancel(session, queued.id).status == "cancelled"
        runs.request_cancel(session, run.id)
        assert runs.cancel_requested(session, run.id)
        with pytest.raises(ValueError, match="only a queued run can start"):
            runs.claim_run(session, run.id)
    with store.Session.begin() as session:
        assert [m.id for m in runs.run_masks(session, run.id, "train")] == [version.id]
        current = runs.get_run(session, run.id)
        assert (current.progress, current.stage) == (0.5, "training") and "step 5/10" in current.log
        # this process is alive: not stale; a dead pid on this host is
        assert runs.recover_stale_runs(session) == []
        current.worker = f"{runs.worker_name().rpartition(':')[0]}:{2**22 + 12345}"
        current.cancel_requested = False
        assert [r.id for r in runs.recover_stale_runs(session)] == [run.id]
        assert current.status == "queued" and "requeued" in current.log
        runs.claim_run(session, run.id, worker="elsewhere:1")
        assert runs.recover_stale_runs(session) == []  # another host, fresh heartbeat
        done = runs.finish_run(session, run.id, "failed", error="boom")
        assert done.finished_at is not None and done.error == "boom"
        with pytest.raises(ValueError, match="already finished"):
            runs.finish_run(session, run.id, "succeeded")


def test_mean_uncertainty_orders_predictions():
    from annotate.store.masks import mean_uncertainty

    certain = np.where(np.arange(16).reshape(4, 4) < 8, 0.0, 1.0)
    assert mean_uncertainty(certain) == 0.0
    assert mean_uncertainty(np.full((4, 4), 0.5)) == 1.0
    assert 0 < mean_uncertainty(np.full((4, 4), 0.9)) < mean_uncertainty(np.full((4, 4), 0.6))
    with pytest.raises(ValueError, match="finite 2-D array in"):
        mean_uncertainty(np.full((4, 4), 1.5))
