"""The one place that talks to orbax. Paths are made absolute; saves are waited for."""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def save(path: str | Path, tree) -> None:
    """Save a pytree of arrays to ``path`` (overwriting), and wait until it is on disk."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).absolute(), jax.device_get(tree), force=True)
    checkpointer.wait_until_finished()


def restore(path: str | Path, like):
    """Restore the pytree saved at ``path`` into the structure (and dtypes) of ``like``."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(like))
    return ocp.StandardCheckpointer().restore(path, target)
