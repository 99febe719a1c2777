"""Runnable experiments: ``python -m experiments.NAME``; each docstring is its recipe."""
