"""Store test helpers: the same tests run on SQLite and on a real PostgreSQL server.

PostgreSQL tests read the server URL from ``SBANET_TEST_POSTGRES_URL`` (``.ci/start-postgres``
prints it) and skip with the reason when it is unset. Each test gets its own schema (dropped
afterwards), so runs are repeatable and tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, make_url, text

POSTGRES_ENV = "SBANET_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: run .ci/start-postgres and export its URL to test on PostgreSQL")
    return url


def backend_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database of ``backend``: a SQLite file, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    server = postgres_url_or_skip()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def png_bytes(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    """A small random RGB PNG (different seeds give different content)."""
    import io

    from PIL import Image

    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pattern_mask(height: int, width: int, writer: int, index: int) -> np.ndarray:
    """A mask that encodes (writer, index), so each correction can be checked pixel for pixel."""
    mask = np.zeros((height, width), bool)
    mask[writer % height, : (index % width) + 1] = True
    mask[(writer + 1 + index // width) % height, index % width] = True
    return mask
