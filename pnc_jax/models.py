"""Networks of L weight matrices without biases (Flax NNX, used functionally by ``train``).

W_1 (width x d), W_2..W_{L-1} (width x width), W_L (K x width). Kinds:
  linear  f(x) = W_L ... W_1 x                        (deep linear network)
  mlp     every hidden layer is Linear -> [BatchNorm] -> ReLU, then the linear classifier W_L
  hybrid  the first ``num_nonlinear`` hidden layers as in mlp, the rest linear
Features: ``[h_0 = x, h_1, ..., h_{L-1}]`` (h_l = output of layer l after its activation); the
logits W_L h_{L-1} are not a layer. NNX kernels are stored (in, out), i.e. kernel = W_l^T.
"""

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


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


def num_nonlinear_layers(kind: str, depth: int, num_nonlinear: int) -> int:
    """How many of the hidden layers 1..L-1 carry ReLU (they are always the first ones)."""
    return {"linear": 0, "mlp": depth - 1, "hybrid": min(num_nonlinear, depth - 1)}[kind]


class Network(nnx.Module):
    """L weight matrices; ``__call__`` takes an optional traced ``depth`` <= L (pad-and-mask).

    With ``depth`` given, hidden layers l >= depth act as the identity, so one padded network of
    L_max matrices computes exactly the network of ``depth`` matrices built from the same key:
    the classifier is created first, so layer l draws the same random key whatever L is.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        width: int,
        num_classes: int,
        depth: int,
        kind: str = "linear",
        num_nonlinear: int = 0,
        batch_norm: bool = True,
        init: str = "orthogonal",
        init_scale: float = 1.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kernel_init = orthogonal_init(init_scale) if init == "orthogonal" else default_init

        def linear(n_in, n_out):
            return nnx.Linear(
                n_in, n_out, use_bias=False, kernel_init=kernel_init, dtype=dtype,
                param_dtype=dtype, precision=HIGHEST, rngs=rngs,
            )

        self.depth = depth
        self.num_nonlinear = num_nonlinear_layers(kind, depth, num_nonlinear)
        self.classifier = linear(width if depth > 1 else input_dim, num_classes)
        dims = [input_dim] + [width] * (depth - 1)
        self.layers = nnx.List([linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        n_norms = self.num_nonlinear if batch_norm else 0
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
        h = x_NxD.astype(self.classifier.kernel.dtype)
        features = [h]
        for l, layer in enumerate(self.layers, start=1):
            z = layer(h)
            if l <= self.num_nonlinear:
                if len(self.norms):
                    z = self.norms[l - 1](z, use_running_average=not train)
                z = jax.nn.relu(z)
            if depth is not None and l >= 2:
                z = jnp.where(l < depth, z, h)  # layer l exists only when l <= depth - 1
            h = z
            features.append(h)
        return self.classifier(h), features


def weight_matrices(params: nnx.State, depth: int) -> list[jax.Array]:
    """The paper's W_1..W_L (out x in) of one model's params (a padded model keeps its first L)."""
    hidden = [params["layers"][i]["kernel"][...].T for i in range(depth - 1)]
    return hidden + [params["classifier"]["kernel"][...].T]
