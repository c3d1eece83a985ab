"""Prices and audio durations: what one AI call cost."""
