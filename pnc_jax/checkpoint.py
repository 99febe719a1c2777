"""The one place that talks to orbax. Saves are atomic and carry a fingerprint of their run.

A checkpoint ``path`` is complete once its ``pnc_meta.json`` ({"fingerprint": ...}) exists,
written after orbax has finished. ``save`` writes ``path.new``, then renames the old ``path`` to
``path.old``, ``path.new`` to ``path``, and deletes ``path.old``: a process killed at any moment
leaves at least one complete checkpoint among the three (or the earlier one, if the first save
never completed). ``restore`` takes the newest complete one and ignores partial ones (the next
``save`` deletes them); ``restore(..., fingerprint=f)`` refuses a checkpoint of another run.

Both work in the calling process alone, also in a multi-process run (orbax is told that this
process is the only one taking part, so it waits on no other): the trees are host arrays, already
gathered from every process (``sharding.to_host``), and ``sweep`` saves and restores on process 0
only, sending what it restored to the others (``sharding.from_writer``).
"""

import json
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from pnc_jax.workdir import atomic_write_text, read_json_file

META = "pnc_meta.json"
_ORBAX_TMP = ".orbax-checkpoint-tmp"


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another run (other settings, grid or data), or one that
    cannot be verified (written before fingerprints): the user's to resolve (--overwrite)."""


def _new(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def _checkpointer() -> ocp.StandardCheckpointer:
    """An orbax checkpointer of this process alone: no barrier with the other processes."""
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def _complete(path: Path) -> bool:
    return (path / META).is_file()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def save(path: str | Path, tree, *, fingerprint: str = "") -> None:
    """Save a pytree of arrays to ``path`` atomically (see the module docstring), replacing an
    earlier checkpoint there; returns once it is on disk."""
    path = Path(path).absolute()
    new, old = _new(path), _old(path)
    for leftover in [new, *path.parent.glob(f"{new.name}{_ORBAX_TMP}*")]:
        _remove(leftover)  # what a killed save left behind
    checkpointer = _checkpointer()
    checkpointer.save(new, jax.device_get(tree), force=True)
    checkpointer.wait_until_finished()
    atomic_write_text(new / META, json.dumps({"fingerprint": fingerprint}) + "\n")
    if _complete(path):
        _remove(old)
        path.rename(old)
    else:
        _remove(path)  # a partial one, or one of an older format
    new.rename(path)
    _remove(old)


def latest(path: str | Path) -> Path | None:
    """The newest complete checkpoint saved at ``path`` (``path`` itself, or what a killed
    ``save`` left as ``path.new`` / ``path.old``), or None."""
    path = Path(path).absolute()
    return next((p for p in (_new(path), path, _old(path)) if _complete(p)), None)


def exists(path: str | Path) -> bool:
    """Whether a checkpoint was saved at ``path``: a complete one, or something at ``path``
    itself that ``restore`` will refuse (a damaged one, or one written before fingerprints).
    What a killed first save left behind does not count."""
    return latest(path) is not None or Path(path).absolute().exists()


def restore(path: str | Path, like, *, fingerprint: str | None = None):
    """Restore the pytree saved at ``path`` into the structure (and dtypes) of ``like``.

    ``FileNotFoundError`` if there is no complete checkpoint; ``CheckpointMismatch`` (a
    ``ValueError``) naming it if it was saved by another run (with ``fingerprint``) or before
    fingerprints; ``ValueError`` naming it if it cannot be read.
    """
    path = Path(path).absolute()
    found = latest(path)
    if found is None and path.exists():
        raise CheckpointMismatch(f"checkpoint {path} has no {META}: damaged, or written by an "
                                 "older version of pnc_jax (before fingerprints); pass "
                                 "--overwrite to start over")
    if found is None:
        raise FileNotFoundError(f"no checkpoint at {path}")
    if fingerprint is not None:
        saved = read_json_file(found / META)
        if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
            got = saved.get("fingerprint") if isinstance(saved, dict) else None
            raise CheckpointMismatch(f"checkpoint {found} belongs to another run (fingerprint "
                                     f"{got}, this run's is {fingerprint}): other settings, "
                                     "grid or data; pass --overwrite to start over")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(like))
    try:
        return _checkpointer().restore(found, target)
    except Exception as e:  # orbax/tensorstore raise many types for a damaged checkpoint
        raise ValueError(f"checkpoint {found} cannot be read ({type(e).__name__}: "
                         f"{str(e)[:300]})") from None
