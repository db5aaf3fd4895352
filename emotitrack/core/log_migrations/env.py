"""Alembic's environment: always handed an open connection by ``log_migrations.upgrade``."""

from __future__ import annotations

from alembic import context

from emotitrack.core.log_migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
