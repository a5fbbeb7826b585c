"""Losing a correction is the worst bug this project can have: concurrent writers (threads and
processes) and writers killed with SIGKILL mid-transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import Counter

import numpy as np
import pytest
from sqlalchemy import func, select, text
from store_backends import BACKENDS, backend_url, pattern_mask, png_bytes

from annotate import make_store
from annotate.store import repository as repo
from annotate.store.models import Expression, Image, MaskVersion, StatusEvent

WRITERS = 8
CORRECTIONS = 100
HEIGHT, WIDTH = 24, 32
# fork: the children inherit the imported modules (torch included) instead of importing them again
FORK = multiprocessing.get_context("fork")


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    yield from backend_url(request.param, tmp_path)


def _seed(url: str, data_dir) -> int:
    with make_store(url, data_dir) as store, store.Session.begin() as session:
        image = repo.add_image(session, store.files, png_bytes(HEIGHT, WIDTH), "scene.png")
        return repo.add_expression(session, image.id, "the contested roof", author="seed").id


def _write_corrections(store, expression_id: int, writer: int) -> None:
    for index in range(CORRECTIONS):
        with store.Session.begin() as session:
            repo.add_mask_version(
                session,
                expression_id,
                pattern_mask(HEIGHT, WIDTH, writer, index),
                kind="correction",
                author=f"writer-{writer}",
                status="submitted",
                note=f"{writer}:{index}",
            )


def _process_writer(url: str, data_dir: str, expression_id: int, writer: int) -> None:
    with make_store(url, data_dir) as store:
        _write_corrections(store, expression_id, writer)


def _check_all_corrections_once(url: str, data_dir, expression_id: int) -> None:
    with make_store(url, data_dir) as store, store.ReadSession() as session:
        versions = repo.history(session, expression_id)
        notes = Counter(v.note for v in versions)
        expected = {f"{w}:{i}" for w in range(WRITERS) for i in range(CORRECTIONS)}
        assert len(versions) == WRITERS * CORRECTIONS
        assert set(notes) == expected and set(notes.values()) == {1}
        for version in versions:
            writer, index = (int(v) for v in version.note.split(":"))
            assert version.author == f"writer-{writer}"
            np.testing.assert_array_equal(repo.mask_array(version), pattern_mask(HEIGHT, WIDTH, writer, index))
        assert session.scalar(select(func.count()).select_from(StatusEvent)) == WRITERS * CORRECTIONS


@pytest.mark.slow
def test_eight_threads_write_800_corrections(url, tmp_path):
    expression_id = _seed(url, tmp_path)
    with make_store(url, tmp_path) as store:  # one store shared by threads, as in the app
        errors: list[BaseException] = []

        def work(writer: int) -> None:
            try:
                _write_corrections(store, expression_id, writer)
            except BaseException as exc:  # reported below: a lost correction must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    _check_all_corrections_once(url, tmp_path, expression_id)


@pytest.mark.slow
def test_eight_processes_write_800_corrections(url, tmp_path):
    expression_id = _seed(url, tmp_path)
    workers = [
        FORK.Process(target=_process_writer, args=(url, str(tmp_path), expression_id, w)) for w in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * WRITERS
    _check_all_corrections_once(url, tmp_path, expression_id)


# --- SIGKILL ----------------------------------------------------------------------------------
def _one_sample(store, session, seed: int) -> int:
    """An image file + expression + submitted mask + acceptance: what one import/annotation writes."""
    image = repo.add_image(session, store.files, png_bytes(HEIGHT, WIDTH, seed=seed), f"img{seed}.png")
    expression = repo.add_expression(session, image.id, f"object {seed}", author="killed")
    version = repo.add_mask_version(
        session, expression.id, pattern_mask(HEIGHT, WIDTH, seed, seed), kind="correction", author="killed",
        status="submitted",
    )  # fmt: skip
    repo.set_status(session, version.id, "accepted", author="killed")
    return expression.id


def _hang_mid_transaction(url: str, data_dir: str, pipe) -> None:
    with make_store(url, data_dir) as store, store.Session.begin() as session:
        _one_sample(store, session, seed=1000)
        session.execute(text("SELECT 1"))
        pipe.send("inside")
        threading.Event().wait(120)  # killed here, the transaction still open


def _write_forever(url: str, data_dir: str, pipe) -> None:
    with make_store(url, data_dir) as store:
        for seed in range(10_000):
            with store.Session.begin() as session:
                expression_id = _one_sample(store, session, seed)
            pipe.send(expression_id)  # acknowledged only after the commit returned


def _check_consistent(url: str, data_dir, acknowledged: set[int]) -> int:
    """Integrity ok, every acknowledged sample complete, no partial sample, no missing file."""
    with make_store(url, data_dir) as store, store.ReadSession() as session:
        if store.engine.dialect.name == "sqlite":
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert session.execute(text("PRAGMA foreign_key_check")).all() == []
        expressions = session.scalars(select(Expression)).all()
        assert acknowledged <= {e.id for e in expressions}
        for expression in expressions:
            (version,) = repo.history(session, expression.id)
            reviews = [(e.from_status, e.to_status) for e in version.events]
            assert reviews == [(None, "submitted"), ("submitted", "accepted")]
            seed = int(expression.text.split()[1])
            np.testing.assert_array_equal(repo.mask_array(version), pattern_mask(HEIGHT, WIDTH, seed, seed))
        for image in session.scalars(select(Image)):
            path = store.files.path(image.path)
            assert path.is_file(), f"image row {image.id} points at a missing file"
            assert path.read_bytes() == png_bytes(HEIGHT, WIDTH, seed=int(image.filename[3:-4]))
        assert session.scalar(select(func.count()).select_from(MaskVersion)) == len(expressions)
        # the dead writer's locks are gone: writing works at once (even with a reader open)
        with store.Session.begin() as writer:
            _one_sample(store, writer, seed=5000)
    return len(expressions)


def _kill(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL


def test_writer_killed_inside_a_transaction_leaves_nothing_behind(url, tmp_path):
    make_store(url, tmp_path).close()
    receive, send = FORK.Pipe(duplex=False)
    process = FORK.Process(target=_hang_mid_transaction, args=(url, str(tmp_path), send))
    process.start()
    assert receive.poll(120) and receive.recv() == "inside"
    assert list((tmp_path / "images").rglob("*.png"))  # its image file was written before the kill
    _kill(process)
    assert _check_consistent(url, tmp_path, acknowledged=set()) == 0


@pytest.mark.parametrize("after", [3, 17])
def test_writer_killed_at_random_keeps_every_acknowledged_sample(url, tmp_path, after):
    make_store(url, tmp_path).close()
    receive, send = FORK.Pipe(duplex=False)
    process = FORK.Process(target=_write_forever, args=(url, str(tmp_path), send))
    process.start()
    acknowledged = set()
    while len(acknowledged) < after:
        assert receive.poll(120), "the writer stopped writing"
        acknowledged.add(receive.recv())
    threading.Event().wait(np.random.default_rng(after).uniform(0.0, 0.05))  # somewhere in the next sample
    _kill(process)
    while receive.poll(0):
        acknowledged.add(receive.recv())
    assert _check_consistent(url, tmp_path, acknowledged) >= after


# --- idempotent saves: a client retries after a lost acknowledgement ---------------------------
def _save(store, expression_id: int, request: int) -> int:
    """One correction saved under the client's request id ``save-<request>``."""
    with store.Session.begin() as session:
        return repo.add_mask_version(
            session, expression_id, pattern_mask(HEIGHT, WIDTH, 1, request), kind="correction",
            author="client", status="submitted", request_id=f"save-{request}",
        ).id  # fmt: skip


def _save_forever(url: str, data_dir: str, expression_id: int, pipe) -> None:
    with make_store(url, data_dir) as store:
        for request in range(10_000):
            pipe.send(("sending", request))
            pipe.send(("saved", request, _save(store, expression_id, request)))


@pytest.mark.parametrize("after", [4, 11])
def test_saves_retried_after_a_kill_are_stored_once(url, tmp_path, after):
    """The server dies with saves in flight; the client resends every save it is unsure of (and the
    acknowledged ones too): each request id ends up as exactly one version, the acknowledged ones
    the very versions first returned."""
    expression_id = _seed(url, tmp_path)
    receive, send = FORK.Pipe(duplex=False)
    process = FORK.Process(target=_save_forever, args=(url, str(tmp_path), expression_id, send))
    process.start()
    acknowledged: dict[int, int] = {}
    sent = -1
    while len(acknowledged) < after:
        assert receive.poll(120), "the writer stopped writing"
        message = receive.recv()
        if message[0] == "sending":
            sent = message[1]
        else:
            acknowledged[message[1]] = message[2]
    threading.Event().wait(np.random.default_rng(after).uniform(0.0, 0.05))
    _kill(process)
    while receive.poll(0):
        message = receive.recv()
        sent = max(sent, message[1])
        if message[0] == "saved":
            acknowledged[message[1]] = message[2]
    with make_store(url, tmp_path) as store:
        retried = {request: _save(store, expression_id, request) for request in range(sent + 1)}
        assert {r: retried[r] for r in acknowledged} == acknowledged
        with store.ReadSession() as session:
            versions = repo.history(session, expression_id)
    assert Counter(v.request_id for v in versions) == Counter(f"save-{r}" for r in range(sent + 1))
    for version in versions:
        request = int(version.request_id.split("-")[1])
        np.testing.assert_array_equal(repo.mask_array(version), pattern_mask(HEIGHT, WIDTH, 1, request))


def test_concurrent_retries_of_one_save_store_one_version(url, tmp_path):
    """Eight threads send the same save at once (a client retrying on a timeout): one version."""
    expression_id = _seed(url, tmp_path)
    with make_store(url, tmp_path) as store:
        barrier = threading.Barrier(WRITERS)
        results: list[int] = []

        def retry() -> None:
            barrier.wait()
            results.append(_save(store, expression_id, 7))

        threads = [threading.Thread(target=retry) for _ in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with store.ReadSession() as session:
            versions = repo.history(session, expression_id)
    assert len(results) == WRITERS and len(set(results)) == 1
    assert [v.id for v in versions] == results[:1]
