"""Tests run with float64 enabled (metrics and theory are float64 code; models pick their dtype)."""

import jax

import pnc_jax  # noqa: F401  (sets XLA flags before JAX starts its CPU client)

jax.config.update("jax_enable_x64", True)
