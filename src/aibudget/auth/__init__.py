"""API keys: who is calling, in which role, for which practice."""
