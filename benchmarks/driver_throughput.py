"""Throughput of the MPI training driver on FSDD features, for several averaging periods.

For each setting, `steps/kaldi_avg/train_rnn.py` trains the recipe's LSTM on FSDD (13-dim MFCC +
per-speaker CMVN, monophone GMM alignments) with persistent ranks; with `--objective chain`,
`steps/kaldi_avg/chain/train.py` trains the recipe's chain TDNN-LSTM (local/chain/run_tdnn_lstm.sh
stages 10-13 make its lattices, tree and xconfig when they are missing). The driver's
per-iteration timing log (`exp/log/data_wait.log`) gives:

  frames/s per rank    training frames / seconds inside the jobs' minibatch loops, per rank
  data-wait share      seconds the loop waited for the prefetch thread / loop seconds
  averaging share      seconds in collectives on rank 0 (waiting for the other rank included)
                       / iteration seconds
  den-graph share      chain: seconds in the chain objective (denominator and numerator
                       forward-backward) on rank 0 / rank 0's training seconds
  stage seconds        the whole train_rnn.py run (setup, LDA, diagnostics, combination, priors)

Settings: `kaldi` = Kaldi's schedule (one average per iteration = samples-per-iter x chunk-width
frames per job), a number = `--averaging.algorithm ma --averaging.period-frames N`.

    python benchmarks/driver_throughput.py [--recipe-dir egs/fsdd/s5] [--feat-dir D --ali-dir D]
        [--settings kaldi,100000,25600,6400] [--ranks 2] [--epochs 2] [--objective xent|chain]
        [--out benchmarks/results]

Without --feat-dir/--ali-dir it uses the recipe's data/train and exp/mono_ali, running
`run.sh --stage 0 --stop-stage 4` first when they are missing. Writes <out>/driver_throughput.json
(<out>/driver_throughput_chain.json for the chain objective).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fsdd_recipe import DEFAULT_RECIPE, REPO, ensure_stages, final_valid, make_xconfig, recipe_env, train_command

TIMING_RE = re.compile(r"iter (\d+): jobs (\d+) frames (\S+) train-seconds (\S+) data-wait-seconds (\S+) max \S+ "
                       r"communication-seconds (\S+) iteration-seconds (\S+)(?: objective-seconds (\S+))?")
CHAIN_DIR = "exp/chain/tdnn_lstm1a_sp"          # local/chain/run_tdnn_lstm.sh's, for train_sp
CHAIN_INPUTS = ["data/train_sp_hires/feats.scp", "exp/chain/tree_sp/final.mdl", "exp/chain/mono_train_sp_lats/lat.1.gz",
                f"{CHAIN_DIR}/configs/network.xconfig"]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe-dir", default=str(DEFAULT_RECIPE))
    p.add_argument("--corpus", default=None, help="FSDD directory passed to run.sh (default: the recipe's)")
    p.add_argument("--feat-dir", default=None)
    p.add_argument("--ali-dir", default=None)
    p.add_argument("--settings", default="kaldi,100000,25600,6400",
                   help="comma-separated: kaldi, or MA periods in frames per worker")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--cell-dim", type=int, default=128)
    p.add_argument("--samples-per-iter", type=int, default=1000)
    p.add_argument("--objective", choices=("xent", "chain"), default="xent",
                   help="xent: train_rnn.py's LSTM; chain: chain/train.py's TDNN-LSTM of local/chain/run_tdnn_lstm.sh")
    p.add_argument("--frames-per-iter", type=int, default=50000, help="chain: --trainer.frames-per-iter")
    p.add_argument("--work-dir", default=None, help="experiment dirs (default: <out>/driver_throughput_runs)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return p


def alignments(args, recipe: Path) -> tuple[str, str]:
    if args.feat_dir or args.ali_dir:
        return args.feat_dir, args.ali_dir
    ensure_stages(recipe, 4, ["data/train/feats.scp", "exp/mono_ali/ali.1.gz"], args.corpus)
    return str(recipe / "data" / "train"), str(recipe / "exp" / "mono_ali")


def ensure_chain_inputs(recipe: Path, corpus: str | None) -> None:
    """run.sh stages 0-7, then local/chain/run_tdnn_lstm.sh stages 10-13 (lattices, tree, xconfig)."""
    if all((recipe / p).exists() for p in CHAIN_INPUTS):
        return
    ensure_stages(recipe, 7, ["data/train_sp_hires/feats.scp", "exp/mono_ali_sp/ali.1.gz"], corpus)
    print(f"preparing the chain inputs: local/chain/run_tdnn_lstm.sh --stage 10 --stop-stage 13 (in {recipe})",
          flush=True)
    subprocess.run(["local/chain/run_tdnn_lstm.sh", "--stage", "10", "--stop-stage", "13"], cwd=recipe, check=True,
                   env=recipe_env(recipe))


def summarize(exp: Path, setting: str, ranks: int, stage_seconds: float, chain: bool = False) -> dict:
    rows = [TIMING_RE.match(line) for line in open(exp / "log" / "data_wait.log")]
    rows = [[float(x or 0) for x in m.groups()] for m in rows if m]
    frames = sum(r[2] for r in rows)
    train_s = sum(r[3] for r in rows)          # summed over jobs = over ranks (one job per rank)
    wait_s = sum(r[4] for r in rows)
    comm_s = sum(r[5] for r in rows)
    iter_s = sum(r[6] for r in rows)
    objective_s = sum(r[7] for r in rows)      # rank 0's
    final = chain_final_valid(exp) if chain else final_valid(exp)
    return {"setting": setting, "ranks": ranks, "iterations": len(rows), "frames": frames,
            "frames_per_s_per_rank": frames / train_s if train_s else None,
            "data_wait_share": wait_s / train_s if train_s else None,
            "averaging_share": comm_s / iter_s if iter_s else None, "averaging_s": comm_s, "iterations_s": iter_s,
            "den_graph_share": objective_s / (train_s / ranks) if chain and train_s else None,
            "stage_s": stage_seconds, "valid_accuracy": final.get("accuracy"),
            "valid_objective": final.get("log-likelihood", final.get("log-probability"))}


def chain_final_valid(exp: Path) -> dict[str, float]:
    """{'log-probability': ..} of final.mdl on the valid set (nnet3-chain-compute-prob's line)."""
    text = (exp / "log" / "compute_prob_valid.final.log").read_text()
    m = re.search(r"Overall log-probability for 'output' is (\S+) ", text)
    return {"log-probability": float(m.group(1))}


def chain_command(recipe: Path, exp: Path, args, extra: list[str]) -> list[str]:
    """local/chain/run_tdnn_lstm.sh's stage 14 (its options) with `args.ranks` jobs."""
    r = str(recipe)
    return [sys.executable, str(REPO / "steps" / "kaldi_avg" / "chain" / "train.py"), "--stage=-10",
            "--use-gpu=false", f"--mpi.num-ranks={args.ranks}", "--feat.cmvn-opts=--norm-means=true --norm-vars=true",
            "--chain.xent-regularize=0.1", "--chain.leaky-hmm-coefficient=0.1", "--chain.l2-regularize=0.0",
            "--chain.apply-deriv-weights=false", "--chain.lm-opts=--num-extra-lm-states=2000",
            "--trainer.num-chunk-per-minibatch=128,64", f"--trainer.frames-per-iter={args.frames_per_iter}",
            f"--trainer.num-epochs={args.epochs}", f"--trainer.optimization.num-jobs-initial={args.ranks}",
            f"--trainer.optimization.num-jobs-final={args.ranks}",
            "--trainer.optimization.initial-effective-lrate=0.002",
            "--trainer.optimization.final-effective-lrate=0.0002", "--trainer.deriv-truncate-margin=8",
            "--egs.chunk-width=30,24,36", "--egs.chunk-left-context=20", "--egs.chunk-right-context=0",
            "--egs.chunk-left-context-initial=0", "--egs.chunk-right-context-final=0",
            f"--feat-dir={r}/data/train_sp_hires", f"--tree-dir={r}/exp/chain/tree_sp",
            f"--lat-dir={r}/exp/chain/mono_train_sp_lats", f"--dir={exp}", *extra]


def print_table(rows: list[dict], chain: bool = False) -> None:
    last = "valid logprob" if chain else "valid acc"
    head = f"{'setting':>10} {'iters':>5} {'frames/s/rank':>13} {'data-wait':>9} {'averaging':>9} " + \
           (f"{'den-graph':>9} " if chain else "") + f"{'stage s':>8} {last:>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        value = f"{r['valid_objective']:.4f}" if chain else f"{r['valid_accuracy']:.3f}"
        den = f"{100 * r['den_graph_share']:>8.2f}% " if chain else ""
        print(f"{r['setting']:>10} {r['iterations']:>5} {r['frames_per_s_per_rank']:>13.0f} "
              f"{100 * r['data_wait_share']:>8.2f}% {100 * r['averaging_share']:>8.2f}% {den}{r['stage_s']:>8.1f} "
              f"{value:>13}")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    recipe = Path(args.recipe_dir).resolve()
    chain = args.objective == "chain"
    if chain:
        ensure_chain_inputs(recipe, args.corpus)
        feat_dir, ali_dir = str(recipe / "data" / "train_sp_hires"), str(recipe / "exp" / "chain" / "tree_sp")
    else:
        feat_dir, ali_dir = alignments(args, recipe)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out / "driver_throughput_runs"
    rows = []
    for setting in args.settings.split(","):
        exp = work / f"{'chain' if chain else 'lstm'}_{setting}"
        shutil.rmtree(exp, ignore_errors=True)
        (exp / "configs").mkdir(parents=True)
        extra = [] if setting == "kaldi" else ["--averaging.algorithm=ma", f"--averaging.period-frames={int(setting)}"]
        if chain:
            shutil.copy(recipe / CHAIN_DIR / "configs" / "network.xconfig", exp / "configs" / "network.xconfig")
            cmd = chain_command(recipe, exp, args, extra)
        else:
            make_xconfig(recipe, ali_dir, feat_dir, exp, args.cell_dim)
            cmd = train_command(feat_dir, ali_dir, exp, ranks=args.ranks, workers=args.ranks, epochs=args.epochs,
                                samples_per_iter=args.samples_per_iter, extra=extra)
        t0 = time.perf_counter()
        with open(exp / "train.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=log, env=recipe_env(recipe))
        rows.append(summarize(exp, setting, args.ranks, time.perf_counter() - t0, chain))
        print(f"{setting}: done in {rows[-1]['stage_s']:.1f} s", flush=True)
    print_table(rows, chain)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("driver_throughput_chain.json" if chain else "driver_throughput.json")
    path.write_text(json.dumps({"objective": args.objective, "feat_dir": feat_dir, "ali_dir": ali_dir,
                                "epochs": args.epochs, "cell_dim": None if chain else args.cell_dim,
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
