"""Command lines of the shell stand-ins, parsed as utils/parse_options.sh does.

Kaldi scripts take `--name value` as well as `--name=value`, and a value may itself start with
dashes (`--cmvn-opts "--norm-vars=true"`), which argparse would take for an option.  Leading
options are therefore joined into `--name=value` before argparse sees them; as in
parse_options.sh, option parsing stops at the first positional argument.
"""
from __future__ import annotations

import argparse
import sys

from ..options import KaldiArgumentParser


def _takes_value(parser: argparse.ArgumentParser, name: str) -> bool | None:
    action = parser._option_string_actions.get(name)  # argparse has no public lookup
    if action is None:
        return None
    return action.nargs != 0


def parse_kaldi_args(parser: KaldiArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    args = list(sys.argv[1:] if argv is None else argv)
    joined, i = [], 0
    while i < len(args) and args[i].startswith("--") and args[i] != "--":
        arg = args[i]
        if "=" not in arg and _takes_value(parser, arg) and i + 1 < len(args):
            joined.append(f"{arg}={args[i + 1]}")
            i += 2
            continue
        joined.append(arg)
        i += 1
    rest = args[i + 1:] if i < len(args) and args[i] == "--" else args[i:]
    return parser.parse_args(joined + ["--"] + rest if rest else joined)
