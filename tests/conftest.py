"""Tests run with float64 enabled (metrics and theory are float64 code; models pick their dtype)
and with implicit rank promotion as an error (every broadcast in the library is explicit)."""

import os
import tempfile

import jax

from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()  # the tests run sweeps: set the XLA flags before JAX starts its CPU client
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# experiments started by the tests cache their compiled programs in a folder of this session
os.environ.setdefault("PNC_COMPILATION_CACHE", tempfile.mkdtemp(prefix="pnc_jax_xla_"))
