"""The command line of every experiment: flags from its settings dataclass, one validation path,
the work directory, signals.

An experiment is ``Experiment(name, doc, presets, run)``: ``presets`` maps names to functions
returning its settings (a frozen dataclass, see ``pnc_jax.config``; the first preset is the
default, and each preset's docstring is its command and expected result); ``run(settings, ctx)``
loads data, calls ``ctx.begin(...)`` once the run has started cleanly, trains and writes its
results. ``Experiment.main(argv)`` does the rest:

1. flags: every settings field is a flag (``--lr``, ``--probe-steps``); precedence: preset <-
   ``--config FILE`` (a run's own config.json, or a partial JSON object) <- flags;
2. validation of every value (type, range, choices, distinct list entries) before any compute;
   a bad value, missing data or a busy work directory exit 2 with one line on stderr;
3. the work directory (``pnc_jax.workdir``), claimed for this run, and the persistent
   compilation cache (``pnc_jax.compilation_cache``);
4. SIGINT / SIGTERM: the sweeps checkpoint and the run exits 130 / 143 with a one-line hint
   (``pnc_jax.signals``);
5. ``--distributed``: the processes of a multi-host run join (``init_distributed``); process 0
   writes the work directory and prints, the others train their shards silently
   (``pnc_jax.workdir``, ``pnc_jax.sharding``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import jax

from pnc_jax.checkpoint import CheckpointMismatch
from pnc_jax.config import (
    Config,
    choices_of,
    field_types,
    flat_fields,
    from_json,
    is_settings,
    to_json,
)
from pnc_jax.workdir import Workdir
from pnc_jax.xla_cpu import avoid_cpu_deadlock

avoid_cpu_deadlock()  # before JAX starts its CPU client (a jaxlib 0.10 CPU hang: xla_cpu)

S = TypeVar("S")


class UsageError(ValueError):
    """A bad setting, missing data or unusable work directory: one line, exit status 2."""


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


# ----------------------------------------------------------------------------- processes

DISTRIBUTED_ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
                   "process_id": "JAX_PROCESS_ID"}
_FLAG = {"coordinator": "--coordinator", "num_processes": "--num-processes",
         "process_id": "--process-id"}


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` for a multi-process run. Each of the coordinator address
    (``HOST:PORT`` of process 0), the number of processes and this process's id comes from its
    argument, else its environment variable (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``), else JAX's detection of the cluster (SLURM, Open MPI, Cloud TPU,
    Kubernetes). ``UsageError`` (one line) naming what is missing or bad, before connecting.
    """
    given: dict[str, Any] = {"coordinator": coordinator, "num_processes": num_processes,
                             "process_id": process_id}
    for key, env in DISTRIBUTED_ENV.items():
        if given[key] is None and os.environ.get(env, "").strip():
            text = os.environ[env].strip()
            try:
                given[key] = text if key == "coordinator" else int(text)
            except ValueError:
                raise UsageError(f"{env}={text!r} is not an integer") from None
    address, n, i = given["coordinator"], given["num_processes"], given["process_id"]
    if n is not None and n < 1:
        raise UsageError(f"the number of processes must be >= 1, got {n}")
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise UsageError(f"the process id must be in 0..{'N-1' if n is None else n - 1}, got {i}")
    if address is not None and ":" not in address:
        raise UsageError(f"the coordinator address must be HOST:PORT, got {address!r}")
    try:
        jax.distributed.initialize(address, n, i)
    except (ValueError, TypeError) as e:  # what neither we nor JAX's cluster detection knew
        missing = [f"{_FLAG[k]} (or {DISTRIBUTED_ENV[k]})" for k, v in given.items() if v is None]
        if not missing:
            raise UsageError(f"--distributed: {e}") from None
        raise UsageError(f"--distributed: no {', '.join(missing)} given and no SLURM, Open MPI, "
                         f"Cloud TPU or Kubernetes cluster detected ({e})") from None


# ----------------------------------------------------------------------------- flags


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _list_of(item: type) -> Callable[[str], list]:
    def parse(s: str) -> list:
        try:
            return [item(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {item.__name__}s, got {s!r}") from None

    return parse


def _flag_kwargs(f: dataclasses.Field, tp, shown_default: str) -> dict:
    from pnc_jax.config import _base

    tp, _ = _base(tp)
    kwargs: dict[str, Any] = {"default": None,
                              "help": f"{f.metadata.get('help', '')} (default: {shown_default})"}
    if getattr(tp, "__origin__", None) is tuple:
        kwargs["type"] = _list_of(tp.__args__[0])
        kwargs["metavar"] = "A,B,..."
    elif tp is bool:
        kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="true|false")
    else:
        kwargs["type"] = tp
    choices = choices_of(f)
    if choices and tp is not bool and getattr(tp, "__origin__", None) is not tuple:
        kwargs["choices"] = choices
    return kwargs


def _show(values: list) -> str:
    shown = []
    for v in values:
        text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        if text not in shown:
            shown.append(text)
    return " / ".join(shown)


def add_settings_flags(parser, defaults, prefix: str = "") -> list[str]:
    """One flag per field of the settings dataclass ``defaults`` (recursively): nested settings
    get their field name as prefix (``--probe-steps``); the fields of nested ``Config``s act at
    the top level and set every Config field (``--lr``). Fields listed in the class attribute
    ``FIXED`` are set by the experiment, not by flags. Returns the flags' ``dest`` names."""
    cls = type(defaults)
    dests: list[str] = []
    hints = field_types(cls)
    flat = flat_fields(cls) if not prefix else []
    fixed = set(getattr(cls, "FIXED", ()))
    own = {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if f.name in flat or f.name in fixed:
            continue
        dest = prefix + f.name
        if is_settings(hints[f.name]):
            dests += add_settings_flags(parser, getattr(defaults, f.name), dest + ".")
            continue
        dests += _add(parser, f, hints[f.name], dest, [getattr(defaults, f.name)])
    if flat:
        config_hints = field_types(Config)
        for f in dataclasses.fields(Config):
            if f.name in own or f.name in fixed:
                continue
            values = [getattr(getattr(defaults, name), f.name) for name in flat]
            dests += _add(parser, f, config_hints[f.name], f.name, values)
    return dests


def _add(parser, f: dataclasses.Field, tp, dest: str, defaults: list) -> list[str]:
    flag = f.metadata.get("flag") or "--" + dest.replace(".", "-").replace("_", "-")
    parser.add_argument(flag, dest=dest, **_flag_kwargs(f, tp, _show(defaults)))
    if f.metadata.get("count_flag"):
        parser.add_argument(f.metadata["count_flag"], dest=dest + "#count", type=int,
                            default=None, metavar="N",
                            help=f"{dest}: 0..N-1 (default: {len(defaults[0])})")
        return [dest, dest + "#count"]
    return [dest]


def _given(args: argparse.Namespace, dests: list[str]) -> dict:
    """The settings flags given on the command line as a (nested) dict for ``from_json``."""
    out: dict = {}
    for dest in dests:
        value = getattr(args, dest)
        if value is None:
            continue
        if dest.endswith("#count"):
            if value < 1:
                raise UsageError(f"--{dest[:-6]} count must be >= 1, got {value}")
            dest, value = dest[:-6], list(range(value))
        node = out
        *parents, leaf = dest.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class RunContext:
    """What ``run`` needs besides its settings: the work directory and how to train."""

    experiment: str
    preset: str
    settings: Any
    workdir: Workdir
    resume: bool
    progress: bool
    depth_strategy: str
    workers: int
    started: bool = False

    def begin(self, data=None, **facts) -> None:
        """The run has validated its settings and loaded its ``data`` (a ``Dataset``): record
        config.json (with the data's shape and ``facts``) and take over the work directory."""
        from pnc_jax.sweep import resolve_strategy

        if data is not None:
            facts["data"] = {"name": data.name, "input_dim": int(data.x_train.shape[1]),
                             "num_samples": int(data.x_train.shape[0]),
                             "num_test": int(data.x_test.shape[0])}
        self.workdir.begin(to_json(self.settings), experiment=self.experiment,
                           preset=self.preset, **facts,
                           run={"depth_strategy": resolve_strategy(self.depth_strategy),
                                "workers": self.workers, "processes": jax.process_count(),
                                "devices": jax.device_count()})
        self.started = True

    def finish(self, results, summary: str, figures: Callable[[Path], object] | None = None,
               timings: dict | None = None, echo: str | None = None) -> None:
        """The run's outputs: results.json (atomic), timings.json (wall times stay out of
        results.json, so that a re-run from config.json reproduces it byte for byte),
        summary.md, the figures (``figures(workdir path)``, drawn from the results) and, on
        stdout, ``echo`` (default: the summary)."""
        self.workdir.write_json("results.json", results)
        if timings is not None:
            self.workdir.write_json("timings.json", timings)
        self.workdir.write_text("summary.md", summary)
        if figures is not None:
            figures(self.workdir.path)
        sys.stdout.write((summary if echo is None else echo) + f"\nwrote {self.workdir.path}\n")

    def sweep(self, cfg: Config, x_NxD, labels_N, sub: str | None = None):
        """``run_sweep`` with this run's options, in the work directory or its child ``sub``."""
        from pnc_jax.sweep import run_sweep

        wd = self.workdir if sub is None else self.workdir.child(sub)
        return run_sweep(cfg, x_NxD, labels_N, wd, resume=self.resume, progress=self.progress,
                         depth_strategy=self.depth_strategy, workers=self.workers)


@dataclasses.dataclass(frozen=True)
class Experiment(Generic[S]):
    """An experiment: its name, module docstring, named presets (first = default) and run."""

    name: str
    doc: str
    presets: dict[str, Callable[[], S]]
    run: Callable[[S, RunContext], Any]
    depth_strategy: str = "auto"  # the default of --depth-strategy

    def parser(self, preset: str | None = None) -> argparse.ArgumentParser:
        preset = preset or next(iter(self.presets))
        parser = argparse.ArgumentParser(
            prog=f"python -m experiments.{self.name}", description=self.doc,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        run = parser.add_argument_group("run")
        run.add_argument("--workdir", default=f"runs/{self.name}",
                         help=f"output folder (default: runs/{self.name})")
        run.add_argument("--overwrite", action="store_true",
                         help="replace the run in --workdir (once this one has started)")
        run.add_argument("--resume", action="store_true",
                         help="continue an interrupted run from its last checkpoint")
        run.add_argument("--no-progress", action="store_true", help="no progress lines")
        run.add_argument("--depth-strategy", choices=("auto", "pad", "group"),
                         default=self.depth_strategy,
                         help="pad: all depths in one program; group: one program per depth; "
                              f"auto: group on CPU, pad on GPU/TPU (default: "
                              f"{self.depth_strategy})")
        run.add_argument("--workers", type=int, default=0,
                         help="host threads that train at once; 0: one per CPU core on CPU, "
                              "1 on GPU/TPU (default: 0)")
        run.add_argument("--compilation-cache", default=None, metavar="DIR|off",
                         help="persistent compilation cache folder, or off (default: "
                              "$PNC_COMPILATION_CACHE, else ~/.cache/pnc_jax/xla)")
        run.add_argument("--distributed", action="store_true",
                         help="join the other processes of a multi-host run first "
                              "(jax.distributed); see --coordinator")
        run.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="with --distributed: process 0's address (default: "
                              "$JAX_COORDINATOR_ADDRESS, else detected on SLURM, Open MPI, "
                              "Cloud TPU, Kubernetes)")
        run.add_argument("--num-processes", type=int, default=None, metavar="N",
                         help="with --distributed: how many processes (default: "
                              "$JAX_NUM_PROCESSES, else detected)")
        run.add_argument("--process-id", type=int, default=None, metavar="I",
                         help="with --distributed: this process, 0..N-1 (default: "
                              "$JAX_PROCESS_ID, else detected)")
        names = ", ".join(f"{k} ({((v.__doc__ or '').strip().splitlines() or [''])[0]})"
                          for k, v in self.presets.items())
        run.add_argument("--preset", choices=tuple(self.presets), default=None,
                         help=f"named settings: {names} (default: {next(iter(self.presets))})")
        run.add_argument("--config", default=None,
                         help="JSON settings: a run's config.json re-runs it; flags win")
        parser.set_defaults(_settings_dests=add_settings_flags(
            parser.add_argument_group("settings"), self.presets[preset]()))
        return parser

    def settings(self, argv=None) -> tuple[S, argparse.Namespace, str]:
        """(validated settings, parsed args, preset name); UsageError on any bad value."""
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--preset", choices=tuple(self.presets), default=None)
        pre.add_argument("--config", default=None)
        known, _ = pre.parse_known_args(argv)
        record = _read_config(known.config, self.name) if known.config else {}
        preset = known.preset or record.get("preset") or next(iter(self.presets))
        if preset not in self.presets:
            raise UsageError(f"--config: unknown preset {preset!r} for {self.name}")
        args = self.parser(preset).parse_args(argv)
        if args.workers < 0:
            raise UsageError(f"--workers={args.workers} must be >= 0 (0: one per CPU core)")
        joined = [f for f, v in (("--coordinator", args.coordinator),
                                 ("--num-processes", args.num_processes),
                                 ("--process-id", args.process_id)) if v is not None]
        if joined and not args.distributed:
            raise UsageError(f"{joined[0]} is for multi-host runs: add --distributed")
        settings = self.presets[preset]()
        try:
            if record:
                settings = from_json(settings, record["config"], "--config")
            settings = from_json(settings, _given(args, args._settings_dests), "")
        except ValueError as e:
            raise UsageError(str(e)) from None
        return validate(settings), args, preset

    def main(self, argv=None):
        """Parse, validate, claim the work directory, run; exit 2 on bad input."""
        from pnc_jax import compilation_cache, signals

        ctx = None
        try:
            settings, args, preset = self.settings(argv)
            if args.distributed:
                init_distributed(args.coordinator, args.num_processes, args.process_id)
                if jax.process_index() > 0:  # its output would repeat process 0's
                    sys.stdout.flush()
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, sys.stdout.fileno())  # also what C++ libraries print
                    os.close(null)
            workdir = Workdir(args.workdir, overwrite=args.overwrite, resume=args.resume)
            compilation_cache.enable(args.compilation_cache)
            jax.config.update("jax_enable_x64", True)  # metrics are float64; models keep dtype
            ctx = RunContext(self.name, preset, settings, workdir, args.resume,
                             not args.no_progress, args.depth_strategy, args.workers)
            with signals.interruptible():
                return self.run(settings, ctx)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            if ctx is not None and ctx.started and not isinstance(e, CheckpointMismatch):
                raise  # a failure during the computation, not bad input: keep the traceback
            fail(str(e))


def validate(settings):
    """Every field's type, choices and distinct entries, each nested Config's ``validate``,
    then the settings' own ``validate`` (if any). Returns ``settings``."""
    from pnc_jax.config import check_fields

    try:
        check_fields(settings)
        hints = field_types(type(settings))
        for f in dataclasses.fields(settings):
            if is_settings(hints[f.name]):
                validate(getattr(settings, f.name))
        if hasattr(settings, "validate"):
            settings.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return settings


def _read_config(path: str, experiment: str) -> dict:
    """``{"config": settings dict, "preset": name or None}`` from a JSON file: a run's
    config.json (must be of this experiment) or a plain settings object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--config {path}: cannot read it as JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):  # a run's record
        if data.get("experiment", experiment) != experiment:
            raise UsageError(f"--config {path} is a run of {data['experiment']!r}, not "
                             f"{experiment!r}")
        return {"config": data["config"], "preset": data.get("preset")}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must hold a JSON object")
    return {"config": data, "preset": None}
