"""Kaldi-style command-line helpers shared by every entry point (`--name=value`, true/false)."""
from __future__ import annotations

import argparse
import sys


def kaldi_bool(text: str) -> bool:
    """Kaldi accepts true/false (and the shell habit 1/0, yes/no)."""
    v = text.strip().lower()
    if v in ("true", "t", "1", "yes", "y"):
        return True
    if v in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class KaldiArgumentParser(argparse.ArgumentParser):
    """argparse with Kaldi's usage-on-error behaviour: the usage (or, for long option lists, the
    supported options), one line naming the problem, exit status 1 as Kaldi's programs."""

    MAX_USAGE_OPTIONS = 20   # beyond this the usage line is unreadable: list the option names

    def error(self, message: str):
        flags = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
        if len(flags) > self.MAX_USAGE_OPTIONS:
            self.exit(1, f"{self.prog}: error: {message}\nsupported options: {' '.join(flags)}\n")
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")
