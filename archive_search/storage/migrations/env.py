"""Alembic's entry point: runs the revisions on the connection `migrations.upgrade` passes in."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
