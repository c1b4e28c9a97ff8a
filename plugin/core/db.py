"""Bind SQLAlchemy to the app: one engine, a session per request or job, and migrations."""

import functools
from datetime import UTC, datetime
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g
from flask.cli import AppGroup
from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from plugin.core.config import packaged

# An execution option (and a Session.info key) for work that only reads.
READ_ONLY = "alliance_read_only"


class Base(DeclarativeBase):
    """Declarative base for every model."""


class UTCDateTime(TypeDecorator):
    """Store naive UTC, hand back aware UTC, so SQLite and PostgreSQL behave alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        """Refuse naive datetimes and store UTC without tzinfo."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; store UTC only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        """Mark what we stored as UTC."""
        return None if value is None else value.replace(tzinfo=UTC)


def normalize_url(url: str) -> str:
    """Route plain postgresql:// URLs to psycopg 3, the driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite turn on WAL and let SQLAlchemy own transactions."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _create_private(Path(url.removeprefix("sqlite:///")))
    # hide_parameters: a database error must never carry row values into a log line.
    engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # pysqlite's own BEGIN handling breaks SAVEPOINT and defers locks; take it over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Straight to the driver: through exec_driver_sql, SQLAlchemy's statement machinery
        # cost a webhook as much as the statement itself (bench/).
        driver = connection.connection.driver_connection
        if connection.get_execution_options().get(READ_ONLY):
            # A deferred BEGIN takes no lock: in WAL mode a reader reads its snapshot while
            # writers commit, so a page being rendered never holds webhooks up.
            driver.execute("BEGIN")
            return
        # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
        driver.execute("BEGIN IMMEDIATE")

    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only; SQLite gives its WAL the same mode.

    The file holds sealed contacts and the answers waiting for the EHR: no other local user
    should even read the ciphertext. An existing file keeps the mode its operator chose.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)


class ReadOnlyError(RuntimeError):
    """Something tried to write through a session opened for reads only."""


def _refuse_writes(session: Session, _context, _instances) -> None:
    # A deferred SQLite transaction that writes after reading can fail outright when another
    # writer committed meanwhile; reads-only work must say so and stay so.
    if session.new or session.dirty or session.deleted:
        raise ReadOnlyError("this session was opened for reads only")


class Database:
    """Own the engine and the session factory for one app."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def readonly(self) -> Session:
        """Open a session for reads only: on SQLite it takes no write lock (PostgreSQL: as is)."""
        bind = self.sessions.kw.get("bind")
        if isinstance(bind, Engine):
            session = self.sessions(bind=bind.execution_options(**{READ_ONLY: True}))
        else:
            # Bound to one connection (the tests' outer transaction): already begun.
            session = self.sessions()
        session.info[READ_ONLY] = True
        event.listen(session, "before_flush", _refuse_writes)
        return session


def init_app(app: Flask) -> None:
    """Create the Database, close request sessions on teardown, add the `db` commands."""
    app.extensions["db"] = Database(app.config["DATABASE_URL"])
    app.teardown_appcontext(_close_session)
    app.cli.add_command(db_cli)


def database() -> Database:
    """Return the current app's Database."""
    return current_app.extensions["db"]


def get_session() -> Session:
    """Return this request's session, opening it on first use (read-only in a read_only view)."""
    if "db_session" not in g:
        g.db_session = database().readonly() if g.get(READ_ONLY) else database().sessions()
    return g.db_session


def read_only(view):
    """Mark a view as one that only reads: its session takes no write lock on SQLite."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        setattr(g, READ_ONLY, True)
        return view(*args, **kwargs)

    return wrapper


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def alembic_config(connection) -> Config:
    """Build an Alembic config that runs our migrations on the given connection."""
    config = Config()
    config.set_main_option("script_location", str(packaged("migrations")))
    config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine, step, revision: str) -> None:
    """Run one Alembic command in a transaction; on SQLite with foreign keys off meanwhile."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        # Batch migrations rebuild a SQLite table by copying it and dropping the original;
        # with foreign keys on, that drop would cascade-delete every row that points at it.
        # The pragma is ignored inside a transaction, so it goes to the driver before BEGIN.
        raw = connection.connection.driver_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                step(alembic_config(connection), revision)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("migration left rows pointing at missing parents")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to a revision."""
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to a revision."""
    _migrate(engine, command.downgrade, revision)


@click.group("db", cls=AppGroup)
def db_cli() -> None:
    """Manage the database schema."""


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    upgrade(database().engine, revision)
    click.echo(f"database at {revision}")
