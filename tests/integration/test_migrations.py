"""The Alembic migrations build exactly the schema the models describe, and undo cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from plugin.db import Base, downgrade, make_engine, upgrade


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_downgrade_to_nothing_and_back_up(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    downgrade(engine, "base")
    with engine.connect() as connection:
        assert set(engine.dialect.get_table_names(connection)) == {"alembic_version"}
    upgrade(engine)
    with engine.connect() as connection:
        assert "ehr_writes" in engine.dialect.get_table_names(connection)
    engine.dispose()
