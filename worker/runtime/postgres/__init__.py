"""PostgreSQL: the runtime's database end. The store behind the ResultWriter port, the relay's outbox,
the housekeeping chores, and the schema checks; the only runtime folder that imports SQLAlchemy and
Alembic (see worker/docs/layout.md)."""
