"""Throughput of the MPI training driver on FSDD features, for several averaging periods.

For each setting, `steps/kaldi_avg/train_rnn.py` trains the recipe's LSTM on FSDD (13-dim MFCC +
per-speaker CMVN, monophone GMM alignments) with persistent ranks, and the driver's per-iteration
timing log (`exp/log/data_wait.log`) gives:

  frames/s per rank    training frames / seconds inside the jobs' minibatch loops, per rank
  data-wait share      seconds the loop waited for the prefetch thread / loop seconds
  averaging share      seconds in collectives on rank 0 (waiting for the other rank included)
                       / iteration seconds
  stage seconds        the whole train_rnn.py run (setup, LDA, diagnostics, combination, priors)

Settings: `kaldi` = Kaldi's schedule (one average per iteration = samples-per-iter x chunk-width
frames per job), a number = `--averaging.algorithm ma --averaging.period-frames N`.

    python benchmarks/driver_throughput.py [--recipe-dir egs/fsdd/s5] [--feat-dir D --ali-dir D]
        [--settings kaldi,100000,25600,6400] [--ranks 2] [--epochs 2] [--out benchmarks/results]

Without --feat-dir/--ali-dir it uses the recipe's data/train and exp/mono_ali, running
`run.sh --stage 0 --stop-stage 4` first when they are missing. Writes <out>/driver_throughput.json.
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
                       r"communication-seconds (\S+) iteration-seconds (\S+)")


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
    p.add_argument("--work-dir", default=None, help="experiment dirs (default: <out>/driver_throughput_runs)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return p


def alignments(args, recipe: Path) -> tuple[str, str]:
    if args.feat_dir or args.ali_dir:
        return args.feat_dir, args.ali_dir
    ensure_stages(recipe, 4, ["data/train/feats.scp", "exp/mono_ali/ali.1.gz"], args.corpus)
    return str(recipe / "data" / "train"), str(recipe / "exp" / "mono_ali")


def summarize(exp: Path, setting: str, ranks: int, stage_seconds: float) -> dict:
    rows = [TIMING_RE.match(line) for line in open(exp / "log" / "data_wait.log")]
    rows = [[float(x) for x in m.groups()] for m in rows if m]
    frames = sum(r[2] for r in rows)
    train_s = sum(r[3] for r in rows)          # summed over jobs = over ranks (one job per rank)
    wait_s = sum(r[4] for r in rows)
    comm_s = sum(r[5] for r in rows)
    iter_s = sum(r[6] for r in rows)
    final = final_valid(exp)
    return {"setting": setting, "ranks": ranks, "iterations": len(rows), "frames": frames,
            "frames_per_s_per_rank": frames / train_s if train_s else None,
            "data_wait_share": wait_s / train_s if train_s else None,
            "averaging_share": comm_s / iter_s if iter_s else None, "averaging_s": comm_s, "iterations_s": iter_s,
            "stage_s": stage_seconds, "valid_accuracy": final["accuracy"],
            "valid_objective": final["log-likelihood"]}


def print_table(rows: list[dict]) -> None:
    head = f"{'setting':>10} {'iters':>5} {'frames/s/rank':>13} {'data-wait':>9} {'averaging':>9} {'stage s':>8} " \
           f"{'valid acc':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        acc = f"{r['valid_accuracy']:.3f}"
        print(f"{r['setting']:>10} {r['iterations']:>5} {r['frames_per_s_per_rank']:>13.0f} "
              f"{100 * r['data_wait_share']:>8.2f}% {100 * r['averaging_share']:>8.2f}% {r['stage_s']:>8.1f} {acc:>9}")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    recipe = Path(args.recipe_dir).resolve()
    feat_dir, ali_dir = alignments(args, recipe)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out / "driver_throughput_runs"
    rows = []
    for setting in args.settings.split(","):
        exp = work / f"lstm_{setting}"
        shutil.rmtree(exp, ignore_errors=True)
        (exp / "configs").mkdir(parents=True)
        make_xconfig(recipe, ali_dir, feat_dir, exp, args.cell_dim)
        extra = [] if setting == "kaldi" else ["--averaging.algorithm=ma", f"--averaging.period-frames={int(setting)}"]
        cmd = train_command(feat_dir, ali_dir, exp, ranks=args.ranks, workers=args.ranks, epochs=args.epochs,
                            samples_per_iter=args.samples_per_iter, extra=extra)
        t0 = time.perf_counter()
        with open(exp / "train_rnn.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=log, env=recipe_env(recipe))
        rows.append(summarize(exp, setting, args.ranks, time.perf_counter() - t0))
        print(f"{setting}: done in {rows[-1]['stage_s']:.1f} s", flush=True)
    print_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "driver_throughput.json"
    path.write_text(json.dumps({"feat_dir": feat_dir, "ali_dir": ali_dir, "epochs": args.epochs,
                                "cell_dim": args.cell_dim, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
