"""pnc_jax: layerwise feature compression and discrimination in deep networks, in JAX.

Modules (data flows one way): config -> data -> models -> losses/optim -> train -> features ->
metrics -> workdir/checkpoint -> plots. Metric code computes in float64: enable it with
``jax.config.update("jax_enable_x64", True)`` (the experiments do) before calling it.
"""

__version__ = "0.1.0"
