"""Figures, one function per figure, drawn from a results.json only (never recomputed)."""
