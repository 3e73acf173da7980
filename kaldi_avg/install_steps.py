"""Kaldi's training scripts, run by kaldi-avg from a Kaldi checkout or from this repository's clone.

`kaldi-avg install-steps <kaldi-steps-dir>` writes `<dir>/kaldi_avg/<script>` for each script of
kaldi_avg.train.options.SCRIPTS (a trainer added there is installed too): a wrapper whose shebang is
the Python that ran the install (a venv's python), so a recipe that calls
`steps/kaldi_avg/train_rnn.py` instead of `steps/nnet3/train_rnn.py` needs neither PATH nor an
activated venv. The clone's own `steps/kaldi_avg/*.py` start under the system python3
instead; `use_clone_venv` moves them to the clone's `venv/bin/python` (tools/install.sh makes it).
Only stdlib imports here: the clone's scripts import this module before they know torch is there.
"""
from __future__ import annotations

import importlib
import os
import sys

from .atomic import FILE_MODE, atomic_path
from .errors import UsageError

MARKER = "# Written by `kaldi-avg install-steps`"   # what may be overwritten: only our own wrappers
SCRIPT_MODE = FILE_MODE | (FILE_MODE & 0o444) >> 2   # executable by whoever may read it
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the clone, or site-packages


class InstallStepsError(UsageError):
    """A steps/ dir the wrappers cannot go into, or an interpreter a shebang cannot name."""


def wrapper_text(script: str, python: str) -> str:
    return (f"#!{python}\n"
            f"{MARKER}: Kaldi's steps/nnet3/{script} command line,\n"
            f"# trained by kaldi-avg under the Python above. Rerun the command to update.\n"
            "import sys\n\n"
            "from kaldi_avg.train.cli import exit_process\n"
            "from kaldi_avg.train.launch import main\n\n"
            'if __name__ == "__main__":\n'
            f"    exit_process(main(sys.argv[1:], script={script!r}))\n")


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.startswith(MARKER) for line in (f.readline(), f.readline()))
    except OSError:
        return False


def install_steps(steps_dir: str, python: str | None = None) -> list[str]:
    """Writes (atomically, replacing earlier ones) the executable wrappers `<steps_dir>/kaldi_avg/<script>`
    that run `python` (default: this interpreter); returns their paths. Refuses, writing nothing,
    a dir that is not Kaldi's steps/ or a file there that an install did not write."""
    # not at the top: it imports torch, which use_clone_venv must not need
    from .train.options import SCRIPTS
    python = python or sys.executable
    if not os.path.isdir(steps_dir):
        raise InstallStepsError(f"{steps_dir}: not a directory; give Kaldi's steps/, "
                                "e.g. $KALDI_ROOT/egs/wsj/s5/steps")
    if not os.path.isdir(os.path.join(steps_dir, "nnet3")):
        raise InstallStepsError(f"{steps_dir}: has no nnet3/, so it is not Kaldi's steps/; "
                                "give e.g. $KALDI_ROOT/egs/wsj/s5/steps")
    # a shebang line ends at the first blank (Linux passes the rest as one argument)
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise InstallStepsError(f"the interpreter path {python!r} cannot be a #! line (it must be "
                                "absolute, without blanks); install from a venv at such a path")
    paths = {script: os.path.join(steps_dir, "kaldi_avg", script) for script in SCRIPTS}
    for path in paths.values():
        if os.path.lexists(path) and not _ours(path):
            raise InstallStepsError(f"{path} exists and was not written by kaldi-avg install-steps; "
                                    "move it away first")
    for script, path in paths.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)   # kaldi_avg/chain/ for chain/train.py
        with atomic_path(path, mode=SCRIPT_MODE) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(wrapper_text(script, python))
    return list(paths.values())


def use_clone_venv() -> None:
    """For the clone's steps/kaldi_avg/*.py (shebang: the system python3): when this interpreter
    cannot import the trainer (no torch), re-runs the script under the clone's venv/bin/python."""
    try:
        importlib.import_module("kaldi_avg.train.launch")   # torch, numpy, kaldiio
    except ImportError as e:
        venv = os.path.join(SOURCE_ROOT, "venv")
        python = os.path.join(venv, "bin", "python")
        # not when already in that venv: a broken venv must fail, not re-exec itself forever
        if os.access(python, os.X_OK) and not os.path.samefile(sys.prefix, venv):
            os.execv(python, [python, *sys.argv])
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: error: {e} (python {sys.executable}); "
                         f"tools/install.sh creates {python}") from None
