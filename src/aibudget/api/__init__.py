"""The HTTP API v1 (FastAPI): routes per feature over the same services as the library and the CLI."""
