"""Run Alembic migrations on the connection handed over by plugin.db."""

from alembic import context

from plugin import models  # noqa: F401  (registers the tables on Base.metadata)
from plugin.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
