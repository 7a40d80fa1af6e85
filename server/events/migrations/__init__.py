"""The event store's Alembic migrations, run by `server.events.store.migrate` on open."""
