"""Extra credit: prepaid grants usable across periods, and their expiry."""
