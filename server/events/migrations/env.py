"""Alembic's environment: migrates the connection `server.events.store.migrate` hands over,
inside the transaction it holds (no alembic.ini, no logging set-up of its own)."""

from alembic import context

from server.events.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# Alembic runs this file with its context set up; imported otherwise (the repository's tests
# import every module) it does nothing.
if hasattr(context, "config"):
    run_migrations()
