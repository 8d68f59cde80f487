"""Rendering of leaderboard tables from stored results; the committed results live in ``results/``."""
