"""Views of a budget: the operator snapshot, the client view and the localized texts."""
