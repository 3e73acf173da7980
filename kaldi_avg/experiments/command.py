"""`kaldi-avg experiment <E1..E6> [--quick] --out DIR`: run one experiment of docs/algorithms.md §3.3 and
write DIR/<E>.json (one row per run), DIR/<E>.png and DIR/<E>.md (the summary table)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

from ..options import KaldiArgumentParser
from . import dataset, matrix, plots, prepare
from .commbench import run_e6
from .runner import RunSpec, Settings, run_all
from .tables import TABLES

EXPERIMENTS = ("E1", "E2", "E3", "E4", "E5", "E6")
TITLES = {
    "E1": "E1 (HPCS 2017 / Kaldi): model averaging, frames per synchronization",
    "E2": "E2 (Li et al. 2017): algorithm comparison across N and seeds",
    "E3": "E3 (Zhang et al. 2019): batch-size ceiling, SSGD vs ADPSGD",
    "E4": "E4 (Zhang et al. 2019): hierarchical ADPSGD",
    "E5": "E5 (Cui et al. 2021): ADPSGD variants with a slow learner",
    "E6": "E6 (§4): measured α, β and collectives vs the α–β model",
}


def get_parser() -> argparse.ArgumentParser:
    p = KaldiArgumentParser(prog="kaldi-avg experiment", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="the reduced grid (minutes on 2 CPU cores)")
    p.add_argument("--corpus", choices=prepare.CORPORA, default=None,
                   help="fsdd (real speech) or synth (the embedded synthetic corpus); default: fsdd when "
                        "its recordings exist, else synth")
    p.add_argument("--fsdd-dir", default=prepare.default_fsdd_dir(), help="FSDD corpus (default: $FSDD_DIR or "
                   "../shared/corpora/fsdd next to the repository)")
    p.add_argument("--feat-dir", default=None, help="an already prepared data dir (with --ali-dir): skip the recipe")
    p.add_argument("--ali-dir", default=None, help="alignments for --feat-dir")
    p.add_argument("--cache", default=None, help="where recipes run (default: <out>/prep); reused when present")
    p.add_argument("--synth-size", default=None, choices=("tiny", "default"),
                   help="synthetic corpus size (default: tiny with --quick, else default)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel")
    p.add_argument("--cell-dim", type=int, default=None, help="LSTM cell dim (default 32 quick, 64 full)")
    p.add_argument("--initial-lrate", type=float, default=Settings.initial_lrate, help="effective learning rate")
    p.add_argument("--final-lrate", type=float, default=Settings.final_lrate)
    p.add_argument("--frames-per-s", type=float, default=Settings.frames_per_s,
                   help="simulated compute speed of a worker")
    p.add_argument("--epochs", type=float, default=None, help="override the frame budget of every run (epochs)")
    p.add_argument("--workers", default=None, help="only these N (comma-separated; single-worker baselines stay)")
    p.add_argument("--replot", action="store_true", help="only redraw <E>.png and <E>.md from <out>/<E>.json")
    p.add_argument("--comm-ratio", type=float, default=Settings.comm_ratio,
                   help="simulated ring-allreduce time over step time")
    return p


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def load_data(args: argparse.Namespace) -> tuple[dataset.Dataset, dict[str, Any]]:
    corpus = prepare.choose_corpus(args.corpus, args.fsdd_dir)
    say(f"corpus: {corpus}" + (f" ({args.fsdd_dir})" if corpus == "fsdd" else " (embedded synthetic digits)"))
    if args.feat_dir or args.ali_dir:
        if not (args.feat_dir and args.ali_dir):
            raise ValueError("give --feat-dir and --ali-dir together")
        prepared = prepare.given(corpus, args.feat_dir, args.ali_dir)
    else:
        size = args.synth_size or ("tiny" if args.quick else "default")
        prepared = prepare.prepare(corpus, args.cache or os.path.join(args.out, "prep"), args.fsdd_dir,
                                   synth_size=size, log=say)
    t0 = time.perf_counter()
    cell_dim = args.cell_dim or (32 if args.quick else 64)
    largest_n = 16
    data = dataset.load(prepared, cell_dim, num_archives=largest_n)
    say(f"data: {data.description} (loaded in {time.perf_counter() - t0:.0f} s)")
    return data, {"corpus": corpus, "prepare_seconds": prepared.seconds, "cell_dim": cell_dim}


def specs_for(args: argparse.Namespace, data: dataset.Dataset, settings: Settings) -> list[RunSpec]:
    if args.experiment == "E5":
        specs = matrix.specs_e5(args.quick, data.train_frames, settings.frames_per_s)
    else:
        specs = matrix.SIMULATED[args.experiment](args.quick)
    if args.workers:
        keep = {int(n) for n in args.workers.split(",")} | {1}
        specs = [spec for spec in specs if spec.workers in keep]
    if args.epochs:
        for spec in specs:
            spec.epochs = args.epochs
            if spec.sim_seconds is not None:
                spec.sim_seconds = matrix.e5_seconds(args.epochs, data.train_frames, spec.workers,
                                                     settings.frames_per_s)
    return specs


def run_experiment(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.experiment == "E6":
        return run_e6(args.quick, log=say)
    data, common = load_data(args)
    settings = Settings(initial_lrate=args.initial_lrate, final_lrate=args.final_lrate,
                        frames_per_s=args.frames_per_s, comm_ratio=args.comm_ratio)
    specs = specs_for(args, data, settings)
    say(f"{args.experiment}: {len(specs)} runs, {args.jobs} at a time")
    rows = run_all(specs, data, settings, jobs=args.jobs, log=say)
    return [{**r, **common} for r in rows]


def write_outputs(experiment: str, rows: list[dict[str, Any]], out: str, quick: bool) -> dict[str, str]:
    paths = {kind: os.path.join(out, f"{experiment}.{kind}") for kind in ("json", "png", "md")}
    with open(paths["json"], "w") as f:
        json.dump(_strict_json(rows), f, indent=1)
    title = TITLES[experiment] + (" [quick]" if quick else "")
    plots.save(experiment, rows, paths["png"], title)
    with open(paths["md"], "w") as f:
        f.write(f"## {title}\n\n{TABLES[experiment](rows)}\n")
    return paths


def _strict_json(value: Any) -> Any:
    """NaN and infinities (a diverged run) as null, so the file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.replot:
        with open(os.path.join(args.out, f"{args.experiment}.json")) as f:
            rows = json.load(f)
    else:
        rows = run_experiment(args)
    paths = write_outputs(args.experiment, rows, args.out, args.quick)
    print(TABLES[args.experiment](rows))
    say(f"{args.experiment}: wrote {', '.join(paths.values())} in {time.perf_counter() - t0:.0f} s")
    return 0
