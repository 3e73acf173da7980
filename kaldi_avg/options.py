"""Kaldi-style command-line helpers shared by every entry point (`--name=value`, true/false)."""
from __future__ import annotations

import argparse


def kaldi_bool(text: str) -> bool:
    """Kaldi accepts true/false (and the shell habit 1/0, yes/no)."""
    v = text.strip().lower()
    if v in ("true", "t", "1", "yes", "y"):
        return True
    if v in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class KaldiArgumentParser(argparse.ArgumentParser):
    """argparse with Kaldi's usage-on-error behaviour: one line naming the problem, exit status 1."""

    def error(self, message: str):
        self.print_usage()
        self.exit(1, f"{self.prog}: error: {message}\n")
