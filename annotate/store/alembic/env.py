"""Alembic environment for the annotation store, usable without an ini file.

``annotate.store.database.upgrade_to_head`` passes an open connection in ``config.attributes["connection"]``
(run inside the caller's transaction); otherwise the URL comes from ``sqlalchemy.url`` or
``$SBANET_STORE_URL`` (e.g. ``alembic -c annotate/store/alembic.ini revision --autogenerate``).
"""

from __future__ import annotations

import os

from alembic import context

from annotate.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    # SQLite cannot ALTER most things: batch mode recreates the table (render_as_batch)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from annotate.store.database import make_engine

    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SBANET_STORE_URL")
    if not url:
        raise ValueError("no database URL: set sqlalchemy.url or $SBANET_STORE_URL")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _configure(connection)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
