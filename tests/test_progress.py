"""Progress: the line covers every depth group that has reported; plain lines off a terminal."""

import io

import numpy as np

from pnc_jax.progress import Progress


def test_progress_line_sums_over_groups_and_is_plain_off_a_terminal():
    out = io.StringIO()
    bar = Progress(100, num_models=7, stream=out)
    bar.update(20, np.array([0.5, 2.0]), num_diverged=0, num_stopped=1, group=0)
    bar.update(40, np.array([np.nan, 0.01, 3.0]), num_diverged=1, num_stopped=2, group=1)
    bar.update(30, np.array([0.25, 1.0]), num_diverged=0, num_stopped=0, group=0)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("epoch 20/100  loss 0.5..2  stopped 1/7  diverged 0")
    # group 0 moved on to epoch 30; group 1's NaN is left out of the loss range
    assert lines[2].startswith("epoch 30..40/100  loss 0.01..3  stopped 2/7  diverged 1")


def test_progress_rewrites_one_line_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress(10, num_models=1, stream=out)
    bar.update(5, np.array([1.0]), 0, 0)
    bar.update(10, np.array([0.1]), 0, 1)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "epoch 10/10" in text.split("\r")[-1]


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    bar = Progress(10, num_models=1, stream=out, enabled=False)
    bar.update(5, np.array([1.0]), 0, 0)
    bar.close()
    assert out.getvalue() == ""
