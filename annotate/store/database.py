"""Open the annotation store: database engine + sessionmaker + data folder, migrated to head.

``make_store()`` with no arguments opens ``./sbanet-data/store.sqlite`` (the folder comes from
``data_dir``, else ``$SBANET_DATA_DIR``, else ``./sbanet-data``; the URL from ``url``, else
``$SBANET_STORE_URL``, else that SQLite file). Any SQLAlchemy URL works, PostgreSQL included
(``postgresql+psycopg://user:pass@host/db``).

SQLite is opened for several writers at once: WAL (readers never block the writer), foreign keys
enforced, a 30 s busy timeout, ``synchronous=FULL`` (a committed correction survives a power cut),
and every transaction of ``store.Session`` starts with ``BEGIN IMMEDIATE`` so two writers queue on
the busy timeout instead of failing with "database is locked" when a read transaction upgrades to a
write. ``store.ReadSession`` begins deferred: use it for read-only work, which then never waits for
a writer nor holds one up (on other backends the two are the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from .files import FileStore
from .models import install_guards

DATA_DIR_ENV = "SBANET_DATA_DIR"
URL_ENV = "SBANET_STORE_URL"
DEFAULT_DATA_DIR = "sbanet-data"
SQLITE_FILE = "store.sqlite"
BUSY_TIMEOUT_S = 30
MIGRATIONS = Path(__file__).resolve().parent / "alembic"
SQLITE_BEGIN_OPTION = "sbanet_sqlite_begin"  # execution option: "IMMEDIATE" (default) or "DEFERRED"
MIGRATION_LOCK_KEY = 0x5BA_7E7  # pg_advisory_xact_lock key serialising concurrent upgrades


@dataclass(frozen=True)
class Store:
    """What the app, the CLI and the fine-tune job share: ``with store.Session.begin() as s: ...``."""

    engine: Engine
    Session: sessionmaker[Session]
    ReadSession: sessionmaker[Session]
    files: FileStore

    @property
    def data_dir(self) -> Path:
        return self.files.root

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the SQLite settings of this module's docstring (other backends: as given)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S}, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, emits BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_store(
    url: str | None = None,
    data_dir: str | Path | None = None,
    *,
    upgrade: bool = True,
    echo: bool = False,
) -> Store:
    """Open (and by default migrate to the newest schema) the store; see the module docstring."""
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    url = url or os.environ.get(URL_ENV) or f"sqlite:///{root / SQLITE_FILE}"
    engine = make_engine(url, echo=echo)
    if upgrade:
        upgrade_to_head(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    reader = sessionmaker(engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"}), expire_on_commit=False)
    for maker in (factory, reader):
        install_guards(maker)
    return Store(engine=engine, Session=factory, ReadSession=reader, files=FileStore(root))


# --- migrations -------------------------------------------------------------------------------
def alembic_config(url: str | None = None) -> Any:
    """An Alembic config for ``annotate/store/alembic`` with no ini file (for ``alembic.command``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def schema_revision(engine: Engine) -> tuple[set[str], set[str]]:
    """(the database's current revisions, the code's head revisions)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return current, heads


def upgrade_to_head(engine: Engine) -> None:
    """Upgrade the database to the newest migration, safely when several processes start at once.

    The upgrade runs in one transaction (SQLite and PostgreSQL both have transactional DDL) that
    first takes the database's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
    lock), so a second process waits, then finds the schema already at head.
    """
    from alembic import command

    current, heads = schema_revision(engine)
    if current == heads:
        return
    unknown = sorted(current - _known_revisions())
    if unknown:
        raise ValueError(
            f"the database is at schema revision {unknown}, which this version of annotate does not know "
            "(a newer version wrote it); upgrade the software"
        )
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
