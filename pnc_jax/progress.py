"""Progress of a sweep: one rewritten line on a terminal, plain lines otherwise."""

import sys
import time

import numpy as np


class Progress:
    def __init__(self, total_epochs: int, num_models: int, stream=None, enabled: bool = True):
        self.total, self.num_models = total_epochs, num_models
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.time()

    def update(self, epoch: int, losses: np.ndarray, num_diverged: int, num_stopped: int,
               label: str = "") -> None:
        if not self.enabled:
            return
        finite = losses[np.isfinite(losses)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
        line = (f"{label}epoch {epoch}/{self.total}  loss {lo:.3g}..{hi:.3g}  "
                f"stopped {num_stopped}/{self.num_models}  diverged {num_diverged}  "
                f"{time.time() - self.start:.1f}s")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
