"""The model axis of a sweep, split over every device (``jax.sharding``), and the few
cross-process steps a multi-host run needs.

Single host: ``model_mesh()`` uses ``jax.devices()``. Multi-host (a TPU slice, several GPU
nodes, or several processes on one CPU machine): every process runs the same command with
``--distributed`` (``cli.init_distributed``); ``jax.devices()`` then spans all processes, each
holds its shard of the models, and:

- a global array is read on the host only through ``to_host``, which gathers the shards of the
  other processes (``np.asarray`` on one would raise);
- whatever decides a collective (resume from a checkpoint, a signal asking to stop) is decided
  on process 0 and sent to all (``from_writer``, ``broadcast``) or agreed on (``agree_max``);
- only process 0 writes files (``is_writer``; ``workdir.Workdir`` arranges it for every file).

Every function here is a collective in a multi-process run: every process calls it, in the same
order. With one process each is a plain local call.
"""

import hashlib
import math
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "models"
T = TypeVar("T")


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
    """Put every leaf's axis 0 (the model axis) across the mesh (the same host values in every
    process: each keeps its own devices' shards)."""
    return jax.device_put(tree, model_sharding(mesh))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


# ----------------------------------------------------------------------------- processes


def process_count() -> int:
    return jax.process_count()


def process_index() -> int:
    return jax.process_index()


def is_writer() -> bool:
    """Process 0 is the one that writes files in a multi-process run (always true with one)."""
    return jax.process_index() == 0


def to_host(tree):
    """Every leaf as a numpy array. A global array with shards on other processes' devices is
    gathered from all of them (``multihost_utils.process_allgather``: a collective); any other
    array is copied from its devices as ``np.asarray`` would."""
    def leaf(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(leaf, tree)


def broadcast(obj: T) -> T:
    """Process 0's ``obj`` (anything picklable) in every process; the others' ``obj`` is
    ignored. Two broadcasts: the pickle's length, then its bytes padded to a power of two (so
    that a few compiled programs serve every size)."""
    if jax.process_count() == 1:
        return obj
    data = pickle.dumps(obj) if is_writer() else b""
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(data), np.int32)))
    buf = np.zeros(max(64, 1 << (size - 1).bit_length()), np.uint8)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return pickle.loads(out[:size].tobytes())


def from_writer(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on process 0 only (file reads and writes); its result, or
    the exception it raised, in every process: all return the same value or raise the same
    error (of the same type and message) together, instead of one waiting for ever on the
    others."""
    if jax.process_count() == 1:
        return fn(*args, **kwargs)
    outcome: tuple[str, Any] = ("ok", None)
    if is_writer():
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 (sent to the other processes, then raised)
            outcome = ("error", _picklable(e))
        except BaseException as e:  # an interrupt: the others stop too, then it goes on
            broadcast(("error", RuntimeError(f"process 0 stopped: {type(e).__name__}")))
            raise
    kind, value = broadcast(outcome)
    if kind == "error":
        raise value
    return value


def _picklable(error: Exception) -> Exception:
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 (an exception type that cannot travel: keep its text)
        return RuntimeError(f"{type(error).__name__}: {error}")


def agree_max(value: int) -> int:
    """The largest ``value`` over all processes (e.g. a signal number, 0 for none)."""
    if jax.process_count() == 1:
        return value
    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


def check_same(text: str, what: str) -> None:
    """``ValueError`` in every process unless ``text`` (e.g. the data's SHA-256) is the same in
    all of them; ``what`` names it."""
    if jax.process_count() == 1:
        return
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    everyone = multihost_utils.process_allgather(digest)
    differ = [i for i in range(len(everyone)) if np.any(everyone[i] != everyone[0])]
    if differ:
        raise ValueError(f"{what} of process {differ[0]} differs from process 0's: every "
                         "process must run the same command on the same data")
