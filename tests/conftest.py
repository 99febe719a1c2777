"""Tests run with float64 enabled (metrics and theory are float64 code; models pick their dtype)."""

import jax

jax.config.update("jax_enable_x64", True)
