"""Features and frame targets for the experiments, made by the repository's own Kaldi-style recipes.

The recipes (`egs/fsdd/s5`, `egs/synth_digits/s5`) write data/, exp/ and mfcc/ next to themselves,
and their path.sh finds the repository as `../../..`. To keep the checkout clean, a recipe runs in a
mirror under the cache directory: `<cache>/root/{venv,steps,utils,kaldi_avg}` link to the repository
and `<cache>/root/egs/<corpus>/s5/{run.sh,local,conf,cmd.sh,path.sh}` link to the recipe, so the same
scripts run unchanged and their outputs land in the cache. Stages 0-4 give data/train (13-dim MFCC
with per-speaker CMVN stats) and exp/mono_ali (monophone GMM alignments).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPORA = ("fsdd", "synth")
RECIPES = {"fsdd": "fsdd", "synth": "synth_digits"}
_ROOT_LINKS = ("venv", "steps", "utils", "kaldi_avg")
_RECIPE_LINKS = ("run.sh", "local", "conf", "cmd.sh", "path.sh")
_DONE = "prepared.ok"


@dataclass(frozen=True)
class Prepared:
    """A prepared recipe: the training data dir and its alignments."""

    corpus: str
    feat_dir: str
    ali_dir: str
    seconds: float      # time spent preparing now (0 when reused)


def default_fsdd_dir() -> str:
    """$FSDD_DIR, else the shared corpus next to the repository (as egs/fsdd/s5/run.sh does)."""
    return os.environ.get("FSDD_DIR") or os.path.normpath(os.path.join(REPO, "..", "shared", "corpora", "fsdd"))


def fsdd_available(fsdd_dir: str) -> bool:
    return os.path.isdir(os.path.join(fsdd_dir, "recordings"))


def choose_corpus(requested: str | None, fsdd_dir: str) -> str:
    """FSDD when asked for or when it exists; otherwise the embedded synthetic corpus."""
    if requested is not None:
        if requested == "fsdd" and not fsdd_available(fsdd_dir):
            raise ValueError(f"--corpus fsdd: no recordings/ under {fsdd_dir} (set $FSDD_DIR)")
        return requested
    return "fsdd" if fsdd_available(fsdd_dir) else "synth"


def recipe_mirror(cache: str, corpus: str) -> str:
    """The mirror's recipe dir (created on demand); outputs of run.sh go there."""
    root = os.path.join(os.path.abspath(cache), "root")
    s5 = os.path.join(root, "egs", RECIPES[corpus], "s5")
    os.makedirs(s5, exist_ok=True)
    for name in _ROOT_LINKS:
        _link(os.path.join(REPO, name), os.path.join(root, name))
    for name in _RECIPE_LINKS:
        _link(os.path.join(REPO, "egs", RECIPES[corpus], "s5", name), os.path.join(s5, name))
    return s5


def _link(target: str, path: str) -> None:
    if os.path.islink(path) and os.readlink(path) == target:
        return
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)


def recipe_command(corpus: str, fsdd_dir: str, nj: int, synth_size: str) -> list[str]:
    command = ["bash", "./run.sh", "--stage", "0", "--stop-stage", "4", "--nj", str(nj)]
    if corpus == "fsdd":
        return command + ["--corpus", fsdd_dir]
    return command + ["--size", synth_size]


def prepare(corpus: str, cache: str, fsdd_dir: str, nj: int = 2, synth_size: str = "tiny",
            log=print) -> Prepared:
    """Run the corpus recipe's stages 0-4 into `cache` once; later calls reuse the result."""
    s5 = recipe_mirror(cache, corpus)
    feat_dir, ali_dir = os.path.join(s5, "data", "train"), os.path.join(s5, "exp", "mono_ali")
    done = os.path.join(s5, _DONE)
    if os.path.exists(done):
        return Prepared(corpus, feat_dir, ali_dir, 0.0)
    command = recipe_command(corpus, fsdd_dir, nj, synth_size)
    log(f"preparing {corpus} features and alignments: (cd {s5} && {' '.join(command)})")
    t0 = time.perf_counter()
    with open(os.path.join(s5, "prepare.log"), "w") as out:
        result = subprocess.run(command, cwd=s5, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"the {corpus} recipe failed (exit {result.returncode}); see {s5}/prepare.log")
    with open(done, "w") as f:
        f.write(f"{seconds:.1f}\n")
    log(f"prepared {corpus} in {seconds:.0f} s")
    return Prepared(corpus, feat_dir, ali_dir, seconds)


def given(corpus: str, feat_dir: str, ali_dir: str) -> Prepared:
    """An already prepared data dir and alignment dir (--feat-dir, --ali-dir)."""
    for path in (os.path.join(feat_dir, "feats.scp"), os.path.join(ali_dir, "final.mdl")):
        if not os.path.exists(path):
            raise ValueError(f"{path} does not exist")
    return Prepared(corpus, feat_dir, ali_dir, 0.0)


if __name__ == "__main__":  # python -m kaldi_avg.experiments.prepare <fsdd|synth> <cache>
    print(prepare(sys.argv[1], sys.argv[2], default_fsdd_dir()))
