"""What the FSDD benchmarks share: the recipe's prepared directories and its LSTM training command."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "egs" / "fsdd" / "s5"
_FINAL_RE = re.compile(r"Overall (accuracy|log-likelihood) for 'output' is (\S+) per frame")


def recipe_env(recipe: Path) -> dict:
    venv_bin = REPO / "venv" / "bin"
    return dict(os.environ, PATH=f"{venv_bin}:{recipe / 'utils'}:{os.environ['PATH']}", PYTHONPATH=str(REPO),
                OMP_NUM_THREADS="1", LC_ALL="C")


def ensure_stages(recipe: Path, stop_stage: int, needed: list[str], corpus: str | None = None) -> None:
    """Run `run.sh --stage 0 --stop-stage N` in the recipe unless every path in `needed` exists."""
    if all((recipe / p).exists() for p in needed):
        return
    cmd = ["./run.sh", "--stage", "0", "--stop-stage", str(stop_stage)] + (["--corpus", corpus] if corpus else [])
    print(f"preparing FSDD: {' '.join(cmd)} (in {recipe})", flush=True)
    subprocess.run(cmd, cwd=recipe, check=True, env=recipe_env(recipe))


def make_xconfig(recipe: Path, ali_dir: str, feat_dir: str, exp: Path, cell_dim: int) -> None:
    # path.sh makes the recipe's utils/ and steps/ links (absent in a fresh checkout).
    subprocess.run(["bash", "-c", '. ./path.sh && local/nnet3/make_xconfig.sh "$@"', "make_xconfig",
                    "--cell-dim", str(cell_dim), "--label-delay", "5", ali_dir, feat_dir, str(exp)],
                   cwd=recipe, check=True, env=recipe_env(recipe), stdout=subprocess.DEVNULL)


def train_command(feat_dir: str, ali_dir: str, exp: Path, *, ranks: int, workers: int, epochs: float,
                  samples_per_iter: int, extra: list[str]) -> list[str]:
    """The recipe's LSTM training (CMVN on means, as issue 4's FSDD setup) with `workers` jobs."""
    return [sys.executable, str(REPO / "steps" / "kaldi_avg" / "train_rnn.py"), "--stage=-10", "--use-gpu=false",
            f"--mpi.num-ranks={ranks}", "--feat.cmvn-opts=--norm-means=true --norm-vars=false",
            f"--trainer.num-epochs={epochs}", f"--trainer.samples-per-iter={samples_per_iter}",
            f"--trainer.optimization.num-jobs-initial={workers}", f"--trainer.optimization.num-jobs-final={workers}",
            "--trainer.optimization.initial-effective-lrate=0.006",
            "--trainer.optimization.final-effective-lrate=0.0006", "--trainer.rnn.num-chunk-per-minibatch=64",
            "--egs.chunk-width=20", "--egs.chunk-left-context=20", "--egs.chunk-right-context=0",
            "--egs.chunk-left-context-initial=0", "--egs.chunk-right-context-final=0",
            f"--feat-dir={feat_dir}", f"--ali-dir={ali_dir}", f"--dir={exp}", *extra]


def final_valid(exp: Path) -> dict[str, float]:
    """{'accuracy': .., 'log-likelihood': ..} of the combined model on the valid set (its compute_prob log)."""
    lines = (exp / "log" / "compute_prob_valid.combined.log").read_text().splitlines()
    return {m.group(1): float(m.group(2)) for m in map(_FINAL_RE.search, lines) if m}
