"""argparse value types shared by the algorithms' `--averaging.*` options."""
from __future__ import annotations

import argparse


def optional_float(text: str) -> float | None:
    """A float, or none/default for "use the algorithm's own default"."""
    if text.strip().lower() in ("none", "default", ""):
        return None
    return float(text)


def period_frames(text: str) -> int | None:
    """Frames per worker between synchronizations: an integer ≥ 0 (0: every step) or "manual"
    (only when the driver calls sync())."""
    if text.strip().lower() == "manual":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("the period must be >= 0 frames, or manual")
    return value
