"""Reliability: the guarantees of SPEC §5 when the server process dies under load."""
