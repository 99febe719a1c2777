"""Networks of L weight matrices without biases (Flax NNX, used functionally by ``train``).

W_1 (width x d), W_2..W_{L-1} (width x width), W_L (K x width). Kinds (``MODELS``, by name):
  linear  f(x) = W_L ... W_1 x                        (deep linear network)
  mlp     every hidden layer is Linear -> [BatchNorm] -> activation (ReLU), then W_L
  hybrid  the first ``num_nonlinear`` hidden layers as in mlp, the rest linear
A new kind is one builder function registered with ``@register_model("name")`` (end of this
module). Features: ``[h_0 = x, h_1, ..., h_{L-1}]`` (h_l = output of layer l after its
activation); the logits W_L h_{L-1} are not a layer. NNX kernels are stored (in, out), i.e.
kernel = W_l^T.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

if TYPE_CHECKING:
    from pnc_jax.config import Config


def orthogonal_init(init_scale: float):
    """W (out x in) = xi [Q, 0]: Q (out x min(out, in)) Haar-orthonormal columns, zero-padded.

    As the paper's code: W_1 = xi U (U: left singular vectors of a width x d Gaussian, extra
    d - width columns zero), hidden W_l = xi * orthogonal, W_L = xi [orthogonal K x K, 0].
    """

    def init(key, shape_inxout, dtype=jnp.float32):
        fan_in, fan_out = shape_inxout
        r = min(fan_in, fan_out)
        g = jax.random.normal(key, (fan_out, r), dtype)
        q, upper = jnp.linalg.qr(g)
        q = q * jnp.where(jnp.diagonal(upper) < 0, -1.0, 1.0)[None, :]  # Haar measure (sign fix)
        w_outxin = jnp.zeros((fan_out, fan_in), dtype).at[:, :r].set(q)
        return (init_scale * w_outxin.T).astype(dtype)

    return init


def default_init(key, shape_inxout, dtype=jnp.float32):
    """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(shape_inxout[0])
    return jax.random.uniform(key, shape_inxout, dtype, -bound, bound)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array] | None] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "identity": None,  # Linear -> BatchNorm blocks (He & Su's "no ReLU" ablation)
}
PRECISIONS = {  # Config.matmul_precision -> (lax precision of the matmuls, computation dtype)
    "highest": (jax.lax.Precision.HIGHEST, None),
    "tensorfloat32": (jax.lax.Precision.DEFAULT, None),  # TF32 on NVIDIA GPUs; fp32 on CPU
    "bfloat16": (jax.lax.Precision.DEFAULT, jnp.bfloat16),  # bf16 inputs, fp32 parameters
}


class Network(nnx.Module):
    """L weight matrices; ``__call__`` takes an optional traced ``depth`` <= L (pad-and-mask).

    The first ``num_blocks`` hidden layers are blocks Linear -> [BatchNorm] -> [activation]; the
    other hidden layers are linear. With ``depth`` given, hidden layers l >= depth act as the
    identity, so one padded network of L_max matrices computes exactly the network of ``depth``
    matrices built from the same key: the classifier is created first, so layer l draws the same
    random key whatever L is.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        width: int,
        num_classes: int,
        depth: int,
        num_blocks: int = 0,
        batch_norm: bool = True,
        activation: str = "relu",
        init: str = "orthogonal",
        init_scale: float = 1.0,
        dtype=jnp.float32,
        matmul_precision: str = "highest",
        rngs: nnx.Rngs,
    ):
        kernel_init = orthogonal_init(init_scale) if init == "orthogonal" else default_init
        precision, compute_dtype = PRECISIONS[matmul_precision]

        def linear(n_in, n_out):
            return nnx.Linear(
                n_in, n_out, use_bias=False, kernel_init=kernel_init,
                dtype=compute_dtype or dtype, param_dtype=dtype, precision=precision, rngs=rngs,
            )

        self.depth = depth
        self.num_blocks = min(num_blocks, depth - 1)
        self.activation = ACTIVATIONS[activation]
        self.classifier = linear(width if depth > 1 else input_dim, num_classes)
        dims = [input_dim] + [width] * (depth - 1)
        self.layers = nnx.List([linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        n_norms = self.num_blocks if batch_norm else 0
        self.norms = nnx.List([
            nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=dtype,
                          rngs=rngs)
            for _ in range(n_norms)
        ])
        for norm in self.norms:  # flax keeps running stats in float32 whatever param_dtype is
            norm.mean = nnx.BatchStat(jnp.zeros(width, dtype))
            norm.var = nnx.BatchStat(jnp.ones(width, dtype))

    def __call__(self, x_NxD, depth=None, train: bool = False):
        """Returns ``(logits_NxK, [h_0, ..., h_{L-1}])``; BatchNorm uses batch stats if train."""
        dtype = self.classifier.kernel.dtype
        h = x_NxD.astype(dtype)
        features = [h]
        for l, layer in enumerate(self.layers, start=1):
            z = layer(h).astype(dtype)
            if l <= self.num_blocks:
                if len(self.norms):
                    z = self.norms[l - 1](z, use_running_average=not train)
                if self.activation is not None:
                    z = self.activation(z)
            if depth is not None and l >= 2:
                z = jnp.where(l < depth, z, h)  # layer l exists only when l <= depth - 1
            h = z
            features.append(h)
        return self.classifier(h).astype(dtype), features


# ----------------------------------------------------------------------------- the registry

ModelBuilder = Callable[["Config", int, int, nnx.Rngs], nnx.Module]
"""(cfg, input_dim, depth, rngs) -> a module whose ``__call__(x_NxD, depth=None, train=False)``
returns ``(logits_NxK, [h_0, ..., h_{L-1}])`` (``depth``: see ``Network``; a kind that cannot
pad-and-mask ignores it and must train with ``--depth-strategy group``)."""

MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: ``@register_model("name")`` on a builder makes ``--model name`` available
    (the config's validation and ``--help`` read this registry)."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return add


def _network(cfg: Config, input_dim: int, depth: int, rngs: nnx.Rngs,
             num_blocks: int) -> Network:
    return Network(
        input_dim=input_dim, width=cfg.width, num_classes=cfg.num_classes, depth=depth,
        num_blocks=num_blocks, batch_norm=cfg.batch_norm, activation=cfg.activation,
        init=cfg.init, init_scale=cfg.init_scale,
        dtype=jnp.float64 if cfg.dtype == "float64" else jnp.float32,
        matmul_precision=cfg.matmul_precision, rngs=rngs,
    )


@register_model("linear")
def linear_network(cfg: Config, input_dim: int, depth: int, rngs: nnx.Rngs) -> Network:
    """Deep linear network f(x) = W_L ... W_1 x."""
    return _network(cfg, input_dim, depth, rngs, num_blocks=0)


@register_model("mlp")
def mlp_network(cfg: Config, input_dim: int, depth: int, rngs: nnx.Rngs) -> Network:
    """Every hidden layer a block Linear -> [BatchNorm] -> activation; linear classifier W_L."""
    return _network(cfg, input_dim, depth, rngs, num_blocks=depth - 1)


@register_model("hybrid")
def hybrid_network(cfg: Config, input_dim: int, depth: int, rngs: nnx.Rngs) -> Network:
    """The first ``cfg.num_nonlinear`` hidden layers are blocks as in mlp, the rest linear."""
    return _network(cfg, input_dim, depth, rngs, num_blocks=cfg.num_nonlinear)


def build_network(cfg: Config, input_dim: int, depth: int, key) -> nnx.Module:
    """The registered ``cfg.model`` of ``depth`` matrices, parameters drawn from ``key``."""
    return MODELS[cfg.model](cfg, input_dim, depth, nnx.Rngs(params=key))


def weight_matrices(params: nnx.State, depth: int) -> list[jax.Array]:
    """The paper's W_1..W_L (out x in) of one model's params (a padded model keeps its first L)."""
    kernels = [params["layers"][i]["kernel"] for i in range(depth - 1)]
    return [jnp.asarray(k[...]).T for k in [*kernels, params["classifier"]["kernel"]]]
