"""Progress of a sweep: one rewritten line on a terminal, plain lines otherwise.

Depth groups may train at once on several threads (``sweep.run_sweep``): each reports under its
own ``group`` and the line covers the whole grid (epoch range of the groups, loss range, models
stopped and diverged). ``update`` is thread-safe.
"""

import sys
import threading
import time

import numpy as np


class Progress:
    def __init__(self, total_epochs: int, num_models: int, stream=None, enabled: bool = True):
        self.total, self.num_models = total_epochs, num_models
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.time()
        self.groups: dict[int, tuple] = {}
        self.lock = threading.Lock()

    def update(self, epoch: int, losses: np.ndarray, num_diverged: int, num_stopped: int,
               group: int = 0) -> None:
        """Group ``group`` is at ``epoch`` with these last-epoch ``losses`` (one per model)."""
        if not self.enabled:
            return
        with self.lock:
            self.groups[group] = (epoch, np.asarray(losses, np.float64), num_diverged,
                                  num_stopped)
            line = self.line()
            self.stream.write("\r" + line.ljust(100) if self.tty else line + "\n")
            self.stream.flush()

    def line(self) -> str:
        epochs = sorted(g[0] for g in self.groups.values())
        losses = np.concatenate([g[1] for g in self.groups.values()])
        finite = losses[np.isfinite(losses)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
        at = f"{epochs[0]}" if epochs[0] == epochs[-1] else f"{epochs[0]}..{epochs[-1]}"
        diverged = sum(g[2] for g in self.groups.values())
        stopped = sum(g[3] for g in self.groups.values())
        return (f"epoch {at}/{self.total}  loss {lo:.3g}..{hi:.3g}  "
                f"stopped {stopped}/{self.num_models}  diverged {diverged}  "
                f"{time.time() - self.start:.1f}s")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
