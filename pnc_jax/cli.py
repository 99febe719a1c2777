"""Command-line plumbing shared by every ``experiments.*`` module.

Bad flag values exit with one line on stderr and status 2, before anything compiles.
"""

import argparse
import dataclasses
import sys

import jax

from pnc_jax.config import Config, add_config_flags, config_from_args
from pnc_jax.sweep import resolve_strategy
from pnc_jax.workdir import Workdir


def parser_for(description: str, defaults: Config, default_workdir: str) -> argparse.ArgumentParser:
    """Every Config field as a flag, plus the run-level flags."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default=default_workdir,
                        help=f"output folder (default: {default_workdir})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in --workdir")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    parser.add_argument("--depth-strategy", choices=("auto", "pad", "group"), default="auto",
                        help="pad: all depths in one program; group: one program per depth; "
                             "auto: group on CPU, pad on GPU/TPU (default: auto)")
    parser.add_argument("--workers", type=int, default=0,
                        help="host threads that train at once (depth groups first, then equal "
                             "parts of a group's models); 0: one per CPU core on CPU, 1 on "
                             "GPU/TPU (default: 0)")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host runs)")
    add_config_flags(parser, defaults)
    return parser


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def parse(parser: argparse.ArgumentParser, defaults: Config, argv=None, **overrides):
    """-> (validated Config, args, Workdir); exits 2 on any bad value or unwritable workdir."""
    args = parser.parse_args(argv)
    if args.workers < 0:
        fail(f"--workers={args.workers} must be >= 0 (0: one per CPU core)")
    try:
        cfg = config_from_args(args, dataclasses.replace(defaults, **overrides))
        workdir = Workdir(args.workdir, overwrite=args.overwrite, resume=args.resume)
    except (ValueError, OSError) as e:
        fail(str(e))
    if args.distributed:
        jax.distributed.initialize()
    jax.config.update("jax_enable_x64", True)  # metrics are float64; models keep cfg.dtype
    return cfg, args, workdir


def record_config(workdir: Workdir, args, config, **extra) -> None:
    """``Workdir.begin``: with --resume, refuse (exit 2) a work directory that ran another
    config or other facts; with --overwrite, remove the old run's files now that this one has
    started cleanly; write config.json (+ the resolved depth strategy, not compared)."""
    try:
        workdir.begin(config, run={"depth_strategy": resolve_strategy(args.depth_strategy)},
                      **extra)
    except (ValueError, OSError) as e:
        fail(str(e))
