"""Accounts: practices, plans, subscription mirrors with their billing periods, and devices."""
