"""The review store's schema migrations (Alembic), run by :class:`~taxonomist.serving.store.ReviewStore` when it
opens a database: one history for SQLite and PostgreSQL; a database is upgraded in place, never recreated."""
