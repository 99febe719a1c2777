"""A depth x seed grid trained in vmapped, sharded programs, then measured layer by layer.

``run_sweep`` is what ``experiments.sweep_depth`` (and the other experiments) call. The grid is
trained in compiled chunks of ``cfg.chunk_epochs`` epochs; between chunks the host logs the
losses to metrics.jsonl, updates the progress line, checkpoints for ``--resume`` (every
``CHECKPOINT_CHUNKS`` chunks counted from epoch 0, so every process decides alike, and at the
end) and stops early once every model has converged or diverged, or when a SIGINT / SIGTERM
asks it to (``signals``: each group then checkpoints first). Every checkpoint carries a
fingerprint of its group (config, runs, data); a resume refuses a checkpoint of another run.

On CPU, XLA runs a small model's matmuls on one core, so the host threads train at once: one
per core (``thread_plan``: depth groups first; threads left over split a group's models into
equal parts). Accelerators run one program at a time. The numbers do not depend on the threads
up to float rounding (a part is vmapped over fewer models).

Several processes (``--distributed``): the model axis spans every process's devices; each
process trains its shards on one host thread (the processes then reach every gather in the same
order); every host read of a global array gathers it (``sharding.to_host``); whether to resume
and from which epoch is read from process 0's disk and sent to all (``sharding.from_writer``);
checkpoint times are chunk counts; a signal to any process stops all of them at the same chunk
boundary (``sharding.agree_max``); process 0 alone logs, checkpoints and shows progress.
"""

import hashlib
import json
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pnc_jax import checkpoint, fits, metrics, sharding, signals
from pnc_jax.config import Config
from pnc_jax.progress import Progress
from pnc_jax.sharding import model_mesh, model_sharding, pad_models, replicate, shard_models
from pnc_jax.train import DIVERGED, RUNNING, STATUS_NAMES, dtype_of, make_trainer, run_measured
from pnc_jax.workdir import Workdir, json_float
from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()  # before JAX starts its CPU client (a jaxlib 0.10 CPU hang: xla_cpu)

# a depth group checkpoints after every CHECKPOINT_CHUNKS-th chunk (epochs counted from 0, so
# the decision is the same in every process and after a resume), when stopped, and at the end;
# a save costs ~0.05-0.1 s, a chunk of the default grid ~0.03 s
CHECKPOINT_CHUNKS = 10


def resolve_strategy(depth_strategy: str) -> str:
    """"auto": "group" on CPU, "pad" on accelerators (see the measurements in ``train``)."""
    if depth_strategy == "auto":
        return "group" if jax.default_backend() == "cpu" else "pad"
    return depth_strategy


def depth_groups(cfg: Config, depth_strategy: str = "auto") -> list[tuple[int, ...]]:
    """Depths trained together. "pad": one program (depth 1, whose W_1 is the classifier, cannot
    be padded and trains apart); "group": one program per depth; "auto": see resolve_strategy."""
    depth_strategy = resolve_strategy(depth_strategy)
    if depth_strategy == "group" or cfg.depth_lrs:  # per-depth lrs: one program per depth
        return [(d,) for d in cfg.depths]
    if depth_strategy != "pad":
        raise ValueError(f"depth_strategy={depth_strategy!r} is not 'auto', 'pad' or 'group'")
    deep = tuple(d for d in cfg.depths if d > 1)
    return [g for g in ((1,) if 1 in cfg.depths else (), deep) if g]


def fingerprint(cfg: Config, runs, x_NxD, labels_N) -> str:
    """SHA-256 of what a depth group's training depends on: the config, the group's (depth,
    seed) runs and the data (values, dtype, shape). Stored with its checkpoints."""
    digest = hashlib.sha256(json.dumps({"config": cfg.to_json(), "runs": runs},
                                       sort_keys=True, default=list).encode())
    for array in (x_NxD, labels_N):
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_data(cfg: Config, x_NxD, labels_N) -> None:
    """Clear errors before any compilation: shapes, label range, empty classes."""
    x_NxD = np.asarray(x_NxD)
    if x_NxD.ndim != 2:
        raise ValueError(f"x must be 2-D (N, d), got shape {x_NxD.shape}")
    metrics.check_inputs(x_NxD, np.asarray(labels_N), cfg.num_classes)
    if cfg.measure_batch > len(x_NxD):
        raise ValueError(f"measure_batch={cfg.measure_batch} exceeds the {len(x_NxD)} training "
                         "points")


def run_records(cfg: Config, runs, state, measured, emergence=None) -> list[dict]:
    """results.json entries: index l of each per-layer list is the output of layer l (0: input).
    With ``emergence`` ({epoch: per-run fuzziness lists}, ``cfg.measure_every`` > 0) each entry
    also holds ``"emergence": {"epochs": [...], "fuzziness": [[D_0..D_{L-1}] per epoch]}``."""
    status = np.asarray(state.status)
    out = []
    for i, (depth, seed) in enumerate(runs):
        per_layer = {k: np.asarray(measured[k][i][:depth], np.float64)
                     for k in ("compression", "discrimination", "nc1", "fuzziness")}
        diverged = status[i] == DIVERGED or not np.isfinite(measured["loss"][i])
        rec = {
            "depth": depth, "seed": seed,
            "status": "diverged" if diverged else STATUS_NAMES[int(status[i])],
            "converged": bool(status[i] != RUNNING and not diverged),
            "epochs_trained": int(state.epoch[i]),
            "final_loss": json_float(measured["loss"][i]),
            "train_accuracy": json_float(measured["accuracy"][i]),
        }
        rec.update({k: json_float(v) for k, v in per_layer.items()})
        fit_c = fits.fit_record(per_layer["compression"], "geometric")
        fit_d = fits.fit_record(per_layer["discrimination"], "linear")
        rec["compression_fit"] = None if diverged else fit_c
        if emergence is not None:
            epochs = sorted(emergence)
            rec["emergence"] = {"epochs": epochs, "fuzziness": [emergence[e][i] for e in epochs]}
        rec["discrimination_fit"] = None if diverged else fit_d
        out.append(rec)
    return out


def default_threads() -> int:
    """Host threads that train at once. CPU: one per core, since XLA runs a tiny model's
    matmuls on one core (the speed-up is in benchmarks/README.md). Accelerators: 1, one
    program at a time already fills the device."""
    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def thread_plan(threads: int, group_sizes: list[int], mesh) -> tuple[int, list[int]]:
    """(depth groups trained at once, parts per group): ``threads`` go to groups first; the
    threads left over split each group's models into equal parts trained at once (on one
    device only: a sharded model axis is already split)."""
    at_once = max(1, min(threads, len(group_sizes)))
    split = threads // at_once if mesh.size == 1 else 1
    return at_once, [max(1, min(split, size)) for size in group_sizes]


@dataclass(frozen=True)
class _Group:
    """One depth group, traced and lowered on the main thread, trained on a worker."""

    index: int
    depths: tuple[int, ...]
    runs: list
    columns: list[int]
    parts: int  # equal slices of the model axis, trained at once on host threads
    state: Any  # the group's models, padded to a multiple of devices x parts
    epoch0: int
    fingerprint: str  # of the group's config, runs and data, stored with its checkpoints
    run_chunk: Any  # jax.stages.Lowered for one part: (state, x, labels) -> (state, losses)
    measure: Any  # jax.stages.Lowered for one part: (state, x, labels) -> per-layer metrics


def run_sweep(cfg: Config, x_NxD, labels_N, workdir: Workdir | None = None, *,
              resume: bool = False, progress: bool = True, depth_strategy: str = "auto",
              mesh=None, workers: int | None = None) -> tuple[list[dict], dict]:
    """Train every (depth, seed) of ``cfg`` on (x, labels); return (records, final states).

    ``records`` are results.json's runs in ``cfg.runs()`` order; ``states`` maps each depth group
    to its stacked final ``TrainState`` (padded model axis trimmed). ``workers`` host threads
    train at once (0 or None: ``default_threads``), split as ``thread_plan`` says; results do not
    depend on it, and metrics.jsonl lines of different groups may interleave. ``resume``:
    continue each group from its checkpoint in ``workdir`` (``ValueError`` naming it if it
    belongs to another run). Inside ``signals.interruptible``, a SIGINT / SIGTERM stops every
    group at its next chunk boundary with a checkpoint and raises ``signals.Interrupted``.
    Multi-process: every process calls it with the same arguments (module docstring).
    """
    cfg.validate()
    check_data(cfg, x_NxD, labels_N)
    mesh = mesh or model_mesh()
    all_runs = cfg.runs()
    x = replicate(jnp.asarray(x_NxD, dtype_of(cfg)), mesh)
    labels = replicate(jnp.asarray(labels_N, jnp.int32), mesh)
    depth_sets = depth_groups(cfg, depth_strategy)
    runs_of = [[r for r in all_runs if r[0] in group] for group in depth_sets]
    # several processes: one thread each, so that all reach their collectives in one order
    threads = 1 if sharding.process_count() > 1 else workers or default_threads()
    at_once, parts = thread_plan(threads, [len(r) for r in runs_of], mesh)
    prints = [fingerprint(cfg, runs, x_NxD, labels_N) for runs in runs_of]
    sharding.check_same(" ".join(prints), "the sweep (config, grid or data)")
    groups = [_prepare(cfg, gi, group, runs_of[gi], all_runs, parts[gi], x, labels, mesh,
                       workdir, resume, prints[gi])
              for gi, group in enumerate(depth_sets)]
    bar = Progress(cfg.epochs, len(all_runs), enabled=progress and sharding.is_writer())
    lock = threading.Lock()  # metrics.jsonl and orbax saves, one thread at a time
    stopped_by: list[int] = []  # a signal that another process received

    def train(group: _Group, stop: threading.Event):
        return _train_group(cfg, group, len(all_runs), x, labels, workdir, bar, lock, stop,
                            stopped_by)

    # largest first, so the last group to start is a short one
    order = sorted(groups, key=lambda g: -max(g.depths) * len(g.runs))
    try:
        with signals.deferred():  # a signal stops the groups at their next chunk boundary
            done = run_all(train, order, at_once)
    finally:
        bar.close()
    if stopped_by:  # this process was not signalled, another one was: stop alike
        raise signals.Interrupted(stopped_by[0], saved=True)
    records, states = {}, {}
    for group, (state, measured, emerged) in sorted(zip(order, done, strict=True),
                                                    key=lambda p: p[0].index):
        for col, rec in zip(group.columns,
                            run_records(cfg, group.runs, state, measured, emerged), strict=True):
            records[col] = rec
        states[group.depths] = state
    return [records[i] for i in range(len(all_runs))], states


def _prepare(cfg, gi, group, runs, all_runs, parts, x, labels, mesh, workdir,
             resume, fprint) -> _Group:
    """Initial (or restored) states, and the training chunk and measurement of one part,
    lowered. Checkpoints hold the unpadded models, so a run resumes on any devices or threads."""
    trainer = make_trainer(cfg, x.shape[1], x.shape[0], max_depth=max(group),
                           lr=cfg.lr_of(group[0]) if len(group) == 1 else None)
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for _, s in runs])
    depths = np.array([d for d, _ in runs], np.int32)
    # op by op, not jitted: the ops' compilations are shared by all groups (7 jitted inits of
    # the default grid compiled for 7.7 s, op by op it takes 2 s)
    state = jax.device_get(jax.vmap(trainer.init)(jnp.asarray(keys), jnp.asarray(depths)))
    epoch0 = 0
    if workdir is not None and resume:  # read on process 0, sent to every process
        epoch0, saved = sharding.from_writer(_restore, workdir, gi, state, fprint)
        state = state if saved is None else saved
    # every leaf sharded on its model axis, as the compiled chunk takes and returns it
    state = shard_models(pad_models(state, mesh, parts), mesh)
    part = _split(state, parts)[0]
    def chunk(s, x, y):  # with measure_every: (state, losses, fuzziness every k epochs)
        if cfg.measure_every:
            return run_measured(trainer, cfg, s, x, y, cfg.chunk_epochs)
        return trainer.run(s, x, y, cfg.chunk_epochs)

    run_chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, None)),
                        out_shardings=model_sharding(mesh))
    if mesh.size == 1:  # one model at a time: jaxlib 0.10's batched CPU LAPACK (the K x K
        # eigh/svd of NC1 and the fuzziness under vmap) can block on XLA's intra-op pool for ever
        measure = jax.jit(lambda s, x, y: jax.lax.map(lambda m: trainer.measure(m, x, y), s))
    else:  # the model axis is sharded over devices
        measure = jax.jit(jax.vmap(trainer.measure, in_axes=(0, None, None)))
    return _Group(gi, group, runs, [all_runs.index(r) for r in runs], parts, state, epoch0,
                  fprint, run_chunk.lower(part, x, labels), measure.lower(part, x, labels))


def _restore(workdir, gi: int, like, fprint: str) -> tuple[int, Any]:
    """(epoch, state) of group ``gi``'s checkpoint, or (0, None) without one; drops the
    metrics.jsonl rows logged after it. Process 0 alone (``sweep`` sends the result on)."""
    epoch0, state = 0, None
    if checkpoint.exists(workdir.checkpoints / f"state_group{gi}"):
        saved = checkpoint.restore(workdir.checkpoints / f"state_group{gi}",
                                   {"state": like, "epoch": 0}, fingerprint=fprint)
        state, epoch0 = saved["state"], int(saved["epoch"])
    workdir.truncate_metrics(epoch0, group=gi)  # rows logged after the checkpoint
    return epoch0, state


def _train_group(cfg, group: _Group, num_runs, x, labels, workdir, bar, lock, stop,
                 stopped_by: list[int]):
    """Train one group in chunks (log, progress, checkpoint between them); measure it. Only
    process 0 logs and saves; every process gathers (``_first``) and decides alike."""
    gi, n, state, epoch0 = group.index, len(group.runs), group.state, group.epoch0
    writes = workdir is not None and sharding.is_writer()
    ckpt_path = None if workdir is None else workdir.checkpoints / f"state_group{gi}"
    saved_epoch = group.epoch0

    def save_state():
        nonlocal saved_epoch
        if ckpt_path is not None and epoch0 != saved_epoch:
            tree = {"state": _first(state, n), "epoch": epoch0}  # a gather: every process
            if writes:
                with lock:
                    checkpoint.save(ckpt_path, tree, fingerprint=group.fingerprint)
            saved_epoch = epoch0

    run_chunk = _over_parts(group.run_chunk.compile(), group.parts)
    status = sharding.to_host(state.status)[:n]
    k = cfg.measure_every  # emergence: {epoch: per-model fuzziness lists}, logged rows first
    emergence = None if not k else sharding.from_writer(_logged_fuzziness, workdir, gi,
                                                         group.columns, epoch0)
    while epoch0 < cfg.epochs and np.any(status == RUNNING):
        # a signal to any process, or another group failed: keep our epochs
        signum = sharding.agree_max(signals.requested() or 0)
        if stop.is_set() or signum:
            save_state()
            if signum and signals.requested() is None:
                stopped_by.append(signum)
            return None
        state, losses, *fuzz = run_chunk(state, x, labels)
        losses, status, fuzz = sharding.to_host((losses, state.status, fuzz))  # gathers
        losses, status = losses[:n].T, status[:n]  # losses: (chunk epochs, models)
        steps = min(cfg.chunk_epochs, cfg.epochs - epoch0)
        rows = [{"epoch": epoch0 + t, "group": gi,
                 "loss": _scatter(losses[t], group.columns, num_runs)} for t in range(steps)]
        if emergence is not None:  # row j of the chunk: after epoch0 + (j+1) k epochs
            for j, fz in enumerate(fuzz[0][:n].transpose(1, 0, 2)[:steps // k]):
                emergence[epoch0 + (j + 1) * k] = [[json_float(v) for v in f[:d]] for f, (d, _)
                                                   in zip(fz, group.runs, strict=True)]
                rows[(j + 1) * k - 1]["fuzziness"] = _scatter_lists(
                    emergence[epoch0 + (j + 1) * k], group.columns, num_runs)
        if writes:
            with lock:
                workdir.append_metrics(rows)
        epoch0 += steps
        bar.update(epoch0, losses[steps - 1], int(np.sum(status == DIVERGED)),
                   int(np.sum(status != RUNNING)), group=gi)
        if (epoch0 // cfg.chunk_epochs) % CHECKPOINT_CHUNKS == 0:
            save_state()
    if ckpt_path is not None:
        save_state()
        final = _first({"params": state.params, "stats": state.stats}, n)  # a gather
        if writes:
            with lock:
                checkpoint.save(workdir.checkpoints / f"final_group{gi}", final,
                                fingerprint=group.fingerprint)
    measure = _over_parts(group.measure.compile(), group.parts)
    measured = sharding.to_host(measure(state, x, labels))
    return _first(state, n), measured, emergence


def _logged_fuzziness(workdir, gi: int, columns: list[int], epoch0: int) -> dict:
    """{epoch: per-model fuzziness lists} of group ``gi``'s metrics.jsonl rows before ``epoch0``
    (a resumed run continues its emergence from them; row e holds the value after e+1 epochs)."""
    if workdir is None or epoch0 == 0 or not workdir.file("metrics.jsonl").exists():
        return {}
    rows = (json.loads(line) for line in workdir.file("metrics.jsonl").read_text().splitlines())
    return {r["epoch"] + 1: [r["fuzziness"][c] for c in columns] for r in rows
            if r.get("group", 0) == gi and "fuzziness" in r and r["epoch"] < epoch0}


def _first(tree, n: int):
    """The first ``n`` models of every leaf, on the host (drops the padding; gathers the
    shards of other processes)."""
    return jax.tree.map(lambda a: a[:n], sharding.to_host(tree))


def _split(tree, parts: int) -> list:
    """``parts`` equal slices of the model axis (axis 0 of every leaf)."""
    if parts == 1:
        return [tree]
    size = len(jax.tree.leaves(tree)[0]) // parts
    return [jax.tree.map(lambda a, i=i: a[i * size:(i + 1) * size], tree) for i in range(parts)]


def _over_parts(fn, parts: int):
    """``fn(state, x, labels)`` of a whole group from a function compiled for one part: the
    parts run at once on ``parts`` threads and their outputs are concatenated."""
    if parts == 1:
        return fn

    def whole(state, x, labels):
        outs = run_all(lambda part, _: fn(part, x, labels), _split(state, parts), parts)
        return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *outs)

    return whole


def run_all(fn, items, workers: int, stop: threading.Event | None = None) -> list:
    """``[fn(item, stop) for item in items]``, on ``workers`` threads. ``stop`` (made here unless
    given) is set as soon as one call raises or the caller is interrupted, so that the others
    can end at their next check; the first error is raised again here."""
    stop = threading.Event() if stop is None else stop

    def guarded(item):
        try:
            return fn(item, stop)
        except BaseException:
            stop.set()
            raise

    if workers <= 1:
        return [guarded(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(guarded, item) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if (error := f.exception()) is not None:
                    raise error
            return [f.result() for f in futures]
        except BaseException:
            stop.set()
            raise


def _scatter_lists(lists, columns, total):
    out: list = [None] * total
    for c, v in zip(columns, lists, strict=True):
        out[c] = v
    return out


def _scatter(values, columns, total):
    out = [None] * total
    for c, v in zip(columns, values, strict=True):
        out[c] = json_float(v)
    return out


def load_run(workdir, depth: int, seed: int):
    """The trained ``Network`` (depth matrices, unpadded) of run (depth, seed) of a sweep's
    work directory: ``model = load_run("runs/sweep_depth", 6, 0); logits, feats = model(x)``.
    Only reads (a read-only or running work directory is fine); every error names its file."""
    from flax import nnx

    from pnc_jax.config import from_json
    from pnc_jax.train import build_network

    wd = Workdir.read(workdir)
    saved = wd.read_config()
    try:
        fields = saved["config"]
        if set(fields) == {"train"}:  # an experiment's settings holding one Config
            fields = fields["train"]
        cfg = from_json(Config(), fields).validate()
        input_dim, num_samples = int(saved["data"]["input_dim"]), int(saved["data"]["num_samples"])
        strategy = (saved.get("run") or {}).get("depth_strategy") or saved["depth_strategy"]
        groups = depth_groups(cfg, strategy)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{wd.file('config.json')} is not a sweep's config.json "
                         f"({type(e).__name__}: {e})") from None
    if (depth, seed) not in cfg.runs():
        raise ValueError(f"run (depth={depth}, seed={seed}) is not in {cfg.runs()}")
    if cfg.dtype == "float64" and jax.dtypes.canonicalize_dtype(jnp.float64) != np.float64:
        raise ValueError(f"{wd.path} trained in float64: call "
                         "jax.config.update('jax_enable_x64', True) before load_run")
    gi, group = next((i, g) for i, g in enumerate(groups) if depth in g)
    runs = [r for r in cfg.runs() if r[0] in group]
    trainer = make_trainer(cfg, input_dim, num_samples, max_depth=max(group))
    like = jax.eval_shape(jax.vmap(trainer.init), jnp.zeros((len(runs), 2), jnp.uint32),
                          jnp.zeros(len(runs), jnp.int32))
    tree = checkpoint.restore(wd.checkpoints / f"final_group{gi}",
                              {"params": like.params, "stats": like.stats})
    i = runs.index((depth, seed))
    padded = jax.tree.map(lambda a: a[i], nnx.to_pure_dict(tree["params"]))
    padded.update(jax.tree.map(lambda a: a[i], nnx.to_pure_dict(tree["stats"])))
    model = nnx.eval_shape(lambda: build_network(cfg, input_dim, depth, jax.random.PRNGKey(0)))
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    keep = jax.tree.map(lambda _, a: a, pure, _subtree(padded, pure))
    nnx.replace_by_pure_dict(state, keep)
    return nnx.merge(graphdef, state)


def _subtree(full: dict, like: dict) -> dict:
    """The entries of ``full`` at the keys of ``like`` (layers 0..L-2 of a padded network)."""
    if not isinstance(like, dict):
        return full
    return {k: _subtree(full[k], v) for k, v in like.items()}
