"""Files that hold clients' data are created readable by their owner only."""

import stat

from sqlalchemy import text

from plugin.core.db import make_engine
from plugin.ehr.writers import NdjsonSink
from tests.support.backlog import INSTRUMENT
from tests.support.bundles import SUBMISSIONS, build, context


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_are_owner_only(tmp_path):
    database = tmp_path / "var" / "alliance.db"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with engine.connect() as connection:
        # While a connection is open the WAL and its index exist beside the database.
        connection.execute(text("SELECT * FROM t")).all()
        files = [
            database,
            database.with_name("alliance.db-wal"),
            database.with_name("alliance.db-shm"),
        ]
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
    assert mode(database.parent) == 0o700
    engine.dispose()


def test_the_ndjson_sink_writes_owner_only_files(tmp_path):
    sink = NdjsonSink(tmp_path / "ehr")
    bundle = build(INSTRUMENT, SUBMISSIONS["mixed"]["form"], context())
    sink.write(bundle)
    written = sorted(path for path in (tmp_path / "ehr").iterdir())
    assert {p.name for p in written} >= {"QuestionnaireResponse.ndjson", "Observation.ndjson"}
    assert {p.name: mode(p) for p in written} == {p.name: 0o600 for p in written}
    assert mode(tmp_path / "ehr") == 0o700
