"""End to end through the Gradio API, after the corrections: fine-tune (start, watch, cancel,
activate), dataset export, georeferenced mask files and the Hub backup (with a fake HfApi).

Runs the real app (tiny model, real store) on loopback without ``--auth``: the annotator is the
name a client sends.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from app_server import running_app
from PIL import Image
from rasterio.transform import from_origin
from sqlalchemy import func, select

from annotate.store import repository as repo
from annotate.store.models import MaskVersion
from sbanet.data.synthetic import make_scene

pytestmark = pytest.mark.slow
SPLITS = ("train", "train", "train", "train", "val", "val")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("workflow")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def accepted(app, tmp_path_factory):
    """Six accepted masks (synthetic scenes, their true masks): four to train on, two held out."""
    folder = tmp_path_factory.mktemp("scenes")
    ids = []
    with app.backend.store.Session.begin() as session:
        for seed, split in enumerate(SPLITS):
            image, referrings = make_scene(seed, 128)
            Image.fromarray(image).save(folder / f"scene-{seed}.png")
            row = repo.add_image(session, app.backend.store.files, folder / f"scene-{seed}.png")
            expression = repo.add_expression(session, row.id, referrings[0].expression, author="ana", split=split)
            version = repo.add_mask_version(
                session, expression.id, referrings[0].mask, kind="correction", author="ana", status="accepted"
            )
            ids.append(version.id)
    return ids


def wait_until_finished(client, run: int, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, *_ = client.predict(run, api_name="/finetune_status")
        if status["finished"]:
            return status
        time.sleep(1.0)
    raise AssertionError(f"fine-tune run {run} did not finish in {timeout} s")


def test_finetune_runs_in_the_background_and_its_model_can_be_activated(app, client, accepted):
    base = app.backend.model.version_id
    models = client.predict(api_name="/models")
    assert [(row[0], row[4]) for row in models["data"]] == [(base, True)]
    run, status = client.predict(base, 2, 2, 1e-4, True, False, "ana", api_name="/start_finetune")
    assert status["status"] in ("queued", "running")
    status = wait_until_finished(client, run)
    assert status["status"] == "succeeded", status["error"]
    assert (status["trained_on"], status["held_out"]) == (4, 2)
    assert {"mIoU", "oIoU", "Pr@0.5"} <= set(status["metrics_before"]) & set(status["metrics_after"])
    _, markdown, log, metrics = client.predict(run, api_name="/finetune_status")
    assert "succeeded" in markdown and f"New model version **{status['result_model']}**" in markdown
    assert status["plan"]["budget"] == "2 steps (set)" and "Budget: 2 steps (set)" in markdown  # what it chose
    assert "held-out mIoU" in log
    assert [row[0] for row in metrics["data"]][:3] == ["count", "mIoU", "oIoU"]

    message, models = client.predict(status["result_model"], api_name="/activate_model")
    assert "finetune" in message and app.backend.model.version_id == status["result_model"]
    assert [row[4] for row in models["data"] if row[0] == status["result_model"]] == [True]
    client.predict(base, api_name="/activate_model")  # back to the base for the other tests
    assert app.backend.model.version_id == base


def test_a_run_can_be_cancelled_and_only_one_runs_at_a_time(app, client, accepted):
    base = app.backend.model.version_id
    run, _ = client.predict(base, 5000, 2, 1e-4, True, False, "ana", api_name="/start_finetune")
    with pytest.raises(Exception, match="still running"):
        client.predict(base, 2, 2, 1e-4, True, False, "ana", api_name="/start_finetune")
    client.predict(run, api_name="/cancel_finetune")
    status = wait_until_finished(client, run)
    assert status["status"] == "cancelled" and status["result_model"] is None
    with pytest.raises(Exception, match="type your name"):
        client.predict(base, 2, 2, 1e-4, True, False, "", api_name="/start_finetune")
    with pytest.raises(Exception, match="minimum value 1"):  # the Steps box refuses it
        client.predict(base, 0, 2, 1e-4, True, False, "ana", api_name="/start_finetune")


def test_a_run_left_running_by_a_dead_app_is_resumed_at_start(app, client, accepted):
    import socket

    from annotate.jobs.finetune_data import FinetuneConfig
    from annotate.store import runs

    with app.backend.store.Session.begin() as session:
        run = runs.create_run(
            session, app.backend.model.version_id, FinetuneConfig(steps=2, batch_size=2).to_dict(), author="ana"
        )
        runs.claim_run(session, run.id, worker=f"{socket.gethostname()}:999999")  # a pid that is gone
        run_id = run.id
    assert app.backend.jobs.recover() == [run_id]
    app.backend.jobs.wait(run_id, timeout=300)
    status, *_ = client.predict(run_id, api_name="/finetune_status")
    assert status["status"] == "succeeded" and "requeued" in status["log"]


def test_dataset_export_is_a_zip_of_the_accepted_masks(client, accepted):
    path, message = client.predict("coco", "accepted masks", api_name="/export")
    assert "Exported **6** expressions" in message
    with zipfile.ZipFile(path) as archive:
        coco = json.loads(archive.read("annotations.json"))
    assert len(coco["annotations"]) == 6 and len(coco["images"]) == 6
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("shapefile", "accepted masks", api_name="/export")


def test_georeferenced_upload_gives_geotiff_geopackage_and_geojson(app, client, tmp_path):
    from gradio_client import handle_file

    bands = np.random.default_rng(0).integers(100, 3000, (3, 64, 80), dtype=np.uint16)
    profile = {
        "driver": "GTiff",
        "width": 80,
        "height": 64,
        "count": 3,
        "dtype": "uint16",
        "crs": "EPSG:32631",
        "transform": from_origin(593270.0, 5747657.0, 1.0, 1.0),
    }
    with rasterio.open(tmp_path / "scene.tif", "w", **profile) as dataset:
        dataset.write(bands)
    *_, files, _, details = client.predict(
        handle_file(str(tmp_path / "scene.tif")), "the field", "", 0.3, "ana", keep_untrusted=True, api_name="/segment"
    )
    suffixes = sorted(Path(f).suffix for f in files)
    assert suffixes == [".geojson", ".gpkg", ".png", ".tif"]
    geotiff = next(f for f in files if f.endswith(".tif"))
    with rasterio.open(geotiff) as mask:
        assert mask.crs.to_epsg() == 32631 and mask.transform == profile["transform"] and mask.shape == (64, 80)
    geojson = json.loads(Path(next(f for f in files if f.endswith(".geojson"))).read_text())
    assert geojson["type"] == "FeatureCollection"
    assert all(f["properties"]["expression"] == "the field" for f in geojson["features"])
    again = client.predict(details["results"][0]["mask_version"], api_name="/export_mask")
    assert sorted(Path(f["path"] if isinstance(f, dict) else f).suffix for f in again) == suffixes


def fake_hf_api(calls: list, target: Path) -> type:
    """An ``HfApi`` stand-in recording what a backup would send (no network here)."""

    class FakeHfApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs, self.token))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            import shutil

            shutil.copytree(folder_path, target)
            calls.append(("upload_folder", repo_id, kwargs, self.token))
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/abc"})()

    return FakeHfApi


def test_backup_to_the_hub_uploads_a_consistent_snapshot(app, client, accepted, monkeypatch, tmp_path):
    import huggingface_hub

    calls: list = []
    uploaded = tmp_path / "uploaded"
    monkeypatch.setattr(huggingface_hub, "HfApi", fake_hf_api(calls, uploaded))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(Exception, match="HF_TOKEN"):
        client.predict("ana/sbanet-backup", api_name="/backup_to_hub")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(Exception, match="not a Hub repo id"):
        client.predict("no slash here", api_name="/backup_to_hub")
    message = client.predict("ana/sbanet-backup", api_name="/backup_to_hub")
    assert "Backed up to **ana/sbanet-backup**" in message and "/commit/abc" in message
    (create, repo_id, options, token), upload = calls
    assert (create, repo_id, token) == ("create_repo", "ana/sbanet-backup", "hf_test_token")
    assert options["repo_type"] == "dataset" and options["private"] is True
    assert upload[0] == "upload_folder" and upload[2]["repo_type"] == "dataset"
    with sqlite3.connect(uploaded / "store.sqlite") as snapshot:
        versions = snapshot.execute("SELECT count(*) FROM mask_version").fetchone()[0]
    with app.backend.store.ReadSession() as session:
        assert versions == session.scalar(select(func.count()).select_from(MaskVersion)) >= len(accepted)
    stored = {p.name for p in app.data_dir.glob("images/*/*")}
    assert {p.name for p in uploaded.glob("images/*/*")} == stored
    assert "huggingface-cli download ana/sbanet-backup" in (uploaded / "README.md").read_text()
