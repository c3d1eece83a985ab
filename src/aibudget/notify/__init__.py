"""Outgoing notifications to the vendor's backend (SPEC §6): an outbox written in the transaction of
their cause (`outbox`), and signed HTTP delivery with retries and a log (`delivery`)."""
