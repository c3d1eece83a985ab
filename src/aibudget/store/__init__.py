"""Storage: engine, tables and migrations; the only place that knows SQLite from PostgreSQL."""
