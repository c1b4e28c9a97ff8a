"""The Alembic migrations build exactly the schema the models describe, and undo cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from plugin.core.db import Base, downgrade, make_engine, upgrade


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


def test_0003_keeps_every_row_of_an_existing_database(tmp_path):
    # 0003 rebuilds SQLite tables (batch mode); with foreign keys on, dropping the old
    # practices table would have cascade-deleted every session event and invitation.
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine, "0002")
    moment = "2026-01-05 10:00:00.000000"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO practices (id, account_id, name, timezone, ehr_target, created_at) "
                "VALUES ('p1', 'demo', 'Demo', 'UTC', 'ndjson:var/ehr', :at)"
            ),
            {"at": moment},
        )
        connection.execute(
            text(
                "INSERT INTO session_events (id, practice_id, platform, event_id, session_id, "
                "started_at, ended_at, patient_ref, practitioner_ref, received_at) VALUES "
                "('e1', 'p1', 'standard', 'm1', 's1', :at, :at, 'Patient/1', 'Practitioner/1', :at)"
            ),
            {"at": moment},
        )
        connection.execute(
            text(
                "INSERT INTO invitations (id, practice_id, session_event_id, status, "
                "questionnaire, language, due_at, next_attempt_at, attempts, created_at) VALUES "
                "('i1', 'p1', 'e1', 'sent', 'q|1', 'en', :at, :at, 0, :at)"
            ),
            {"at": moment},
        )
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT platform, status FROM practices")).all() == [
            ("standard", "active")
        ]
        # Events from before 0003 already had their invitation: they must not be planned again.
        assert connection.execute(text("SELECT status FROM session_events")).all() == [("planned",)]
        assert connection.execute(text("SELECT channels FROM invitations")).all() == [
            ('["email"]',)
        ]
    engine.dispose()
