"""Outgoing notifications: the outbox, signed delivery with retries, the log (SPEC §6)."""
