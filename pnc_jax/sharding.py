"""The model axis of a sweep, split over every device (``jax.sharding``).

Single host: ``model_mesh()`` uses ``jax.devices()``. Multi-host (a TPU slice, several GPU
nodes): call ``jax.distributed.initialize()`` first on every host (``--distributed`` in the
experiments), then run the same command everywhere; ``jax.devices()`` spans all hosts, each
host holds its shard of the models, and only process 0 writes the work directory.
"""

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "models"


def model_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def padded_count(num_models: int, mesh: Mesh, parts: int = 1) -> int:
    """Models are padded (by repeating the last one) to a multiple of the device count times
    ``parts`` (equal slices trained on separate host threads, see ``sweep``)."""
    multiple = mesh.size * parts
    return math.ceil(num_models / multiple) * multiple


def pad_models(tree, mesh: Mesh, parts: int = 1):
    """Every leaf (host arrays, model axis 0) padded to ``padded_count`` models."""
    def pad(values):
        values = np.asarray(values)
        extra = padded_count(len(values), mesh, parts) - len(values)
        return np.concatenate([values, np.repeat(values[-1:], extra, axis=0)]) if extra else values

    return jax.tree.map(pad, tree)


def model_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 (the model axis) split across the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def shard_models(tree, mesh: Mesh):
    """Put every leaf's axis 0 (the model axis) across the mesh."""
    return jax.device_put(tree, model_sharding(mesh))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def is_writer() -> bool:
    """Only process 0 writes files in a multi-host run."""
    return jax.process_index() == 0
