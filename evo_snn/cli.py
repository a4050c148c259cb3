"""argparse types shared by the command-line tools (search, baselines, reproduce)."""

from __future__ import annotations

import argparse
import sys


def ratio_list(text: str) -> list[float]:
    """``'0.1,0.5,0.9'`` -> [0.1, 0.5, 0.9]: prune ratios / sparsities, each in [0, 1);
    raises argparse.ArgumentTypeError (argparse prints it and exits 2)."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if not vals or any(not 0.0 <= v < 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"ratios must be in [0, 1), got {text!r}")
    return vals


def epochs_list(text: str) -> list[float]:
    """``'0,2'`` -> [0.0, 2.0]: training budgets in epochs, each >= 0; raises argparse.ArgumentTypeError."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"epochs must be >= 0, got {text!r}")
    return vals


def choice_list(choices, what: str, allow_none: bool = False):
    """An argparse type for comma-separated names from ``choices`` (``what`` names them in
    the error); with ``allow_none``, the word ``none`` gives an empty list."""

    def parse(text: str) -> list[str]:
        if allow_none and text.strip() == "none":
            return []
        vals = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if not vals or bad:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or text!r}; known: {list(choices)}")
        return vals

    return parse


def show_progress(args) -> bool:
    """Progress bars for a command-line tool: with ``--progress``, or when stderr is a
    terminal and ``--no-progress`` is not given. A log file gets the tools' one-line
    messages, not tqdm's ``\\r`` updates."""
    if getattr(args, "no_progress", False):
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()
