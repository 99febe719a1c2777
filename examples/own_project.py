"""pnc_jax in your own JAX project: your own Flax NNX model, trained with optax inside a
``lax.scan``, measured layer by layer by ``pnc_jax.report`` during and after training; a figure.

    python examples/own_project.py [--out own_project.png] [--epochs 20] [--steps 25]

Runs with ``jax_enable_x64`` off, as most JAX projects do: the model trains in float32, the
metrics come back in float64 anyway. A few seconds on a CPU.
"""

import argparse

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import pnc_jax as pj  # noqa: E402


def make_data(num_classes=4, per_class=(60, 80, 100, 120), dim=20, seed=0):
    """A Gaussian mixture with imbalanced classes (float32)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    means = 2.0 * rng.standard_normal((num_classes, dim))
    x = means[y] + 1.5 * rng.standard_normal((len(y), dim))
    return x.astype(np.float32), y.astype(np.int32)


# --- README: begin
class MLP(nnx.Module):  # your model: it only has to return its per-layer features
    def __init__(self, sizes, num_classes, *, rngs):
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])
        self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x):
        features = [x]  # h_0 = the input, then h_1 .. h_{L-1}
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
            features.append(x)
        return self.head(x), features


def train(x, y, num_classes, *, epochs=20, steps=25, seed=0):
    """Adam on the full batch; pnc_jax.report of every layer after every epoch, in the scan."""
    model = MLP([x.shape[1], 64, 64, 64, 64, 64], num_classes, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-3)

    def loss_fn(params):
        logits, _ = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(carry, _):
        params, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, _):
        carry, _ = jax.lax.scan(step, carry, length=steps)
        logits, features = nnx.merge(graphdef, carry[0])(x)
        return carry, pj.report(features, y, num_classes, logits=logits)  # jittable

    run = jax.jit(lambda carry: jax.lax.scan(epoch, carry, length=epochs))
    _, history = run((params, tx.init(params)))
    return history  # every entry with a leading epoch axis
# --- README: end


def figure(history, path):
    """C_l and D_l after training (with the fits), and C_l of every layer over training."""
    final = jax.tree.map(lambda v: np.asarray(v[-1]), history)
    layers = np.arange(len(final["compression"]))
    deep = layers[1:]  # the fits use l >= 1
    fig, (ax_c, ax_d, ax_t) = plt.subplots(1, 3, figsize=(13, 3.6))
    cf, df = final["compression_fit"], final["discrimination_fit"]
    ax_c.semilogy(layers, final["compression"], "o-", label="C_l")
    ax_c.semilogy(deep, np.exp(cf["intercept"] + cf["slope"] * deep), "k--",
                  label=f"fit: ratio {cf['ratio']:.3f}, R2 {cf['r2']:.3f}")
    ax_d.plot(layers, final["discrimination"], "o-", label="D_l")
    ax_d.plot(deep, df["intercept"] + df["slope"] * deep, "k--",
              label=f"fit: slope {df['slope']:.3f}, R2 {df['r2']:.3f}")
    c_epochs = np.asarray(history["compression"])
    for l in layers:
        ax_t.semilogy(np.arange(1, len(c_epochs) + 1), c_epochs[:, l], label=f"layer {l}")
    for ax, title, xlabel in ((ax_c, "compression C_l", "layer l"),
                              (ax_d, "discrimination D_l", "layer l"),
                              (ax_t, "C_l during training", "epoch")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="own_project.png", help="figure path")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25, help="optimizer steps per epoch")
    args = ap.parse_args(argv)
    epochs, steps = args.epochs, args.steps
    # --- README: begin
    x, y = make_data()  # x: N x 20 float32, y: N int labels (4 imbalanced Gaussian classes)
    history = train(x, y, num_classes=4, epochs=epochs, steps=steps)
    final = jax.tree.map(lambda v: v[-1], history)  # the report after the last epoch
    for key in ("compression", "discrimination", "nc1", "fuzziness", "numerical_rank", "nc4"):
        print(f"{key:15s}", np.array2string(np.asarray(final[key]), precision=4))
    fit = final["compression_fit"]  # geometric fit of C_l over l >= 1
    print(f"ratio {float(fit['ratio']):.4f}  r2 {float(fit['r2']):.4f}")  # float64, x64 off
    # --- README: end
    figure(history, args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
