"""The operator dashboard at /admin: its data and its pages."""
