"""Kaldi-style command-line helpers shared by every entry point (`--name=value`, true/false)."""
from __future__ import annotations

import argparse
import difflib
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
    """argparse with Kaldi's usage-on-error behaviour: the usage (or, for long option lists, a pointer
    to --help), one line naming the problem, exit status 1 as Kaldi's programs. An unknown option is
    named with the closest supported ones."""

    MAX_USAGE_OPTIONS = 20   # beyond this the usage line is unreadable

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error("; ".join(self._unrecognized(word) for word in unknown))
        return parsed

    def _flags(self) -> list[str]:
        return sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))

    def _unrecognized(self, word: str) -> str:
        if not word.startswith("-"):
            return f"unexpected argument {word!r}"
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag, self._flags(), n=3, cutoff=0.85)
        return f"unrecognized option {flag}" + (f" (did you mean {' or '.join(close)}?)" if close else "")

    def error(self, message: str):
        if len(self._flags()) > self.MAX_USAGE_OPTIONS:
            self.exit(1, f"{self.prog}: error: {message} (--help lists the options)\n")
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")
