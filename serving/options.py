"""Flag defaults shared by ``driftloop serve`` and ``python -m serving``: here, not in
``serving.model``, so that building the command line does not import kserve (a second)."""

from __future__ import annotations

import argparse

# 1,000 rows keeps a request under ~50 ms and a few hundred KB; bigger jobs are batch jobs.
DEFAULT_MAX_BATCH_ROWS = 1_000
# torch intra-op threads in a model server. One: a one-row request otherwise pays for
# waking a second thread (bike, 2 cores: p50 1.39 -> 1.08 ms with one), while a 1,000-row
# batch barely gains from two (6.0 -> 5.5 ms). Scale with replicas, not threads.
DEFAULT_TORCH_THREADS = 1


def threads_arg(text: str) -> int:
    """argparse type for the torch threads flags: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def share_arg(text: str) -> float:
    """argparse type for ``--shadow_share``: a fraction in [0, 1]."""
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return share
