"""Every distributed algorithm trains the FSDD LSTM and exports a final.mdl that decodes.

For each `--averaging.algorithm`, two runs of `steps/kaldi_avg/train_rnn.py`: 2 real ranks under
mpiexec (one worker each) and N simulated workers on one rank; each exported `final.mdl` is then
decoded with `steps/nnet3/decode.sh` on a subset of the test speaker (every `--test-every`-th
utterance) with the recipe's HCLG graph, and scored.

    python benchmarks/fsdd_algorithms.py [--recipe-dir egs/fsdd/s5] [--algorithms ma,bmuf,...]
        [--simulated 8] [--epochs 1] [--test-every 10] [--out benchmarks/results]

Uses the recipe's data/{train,test} (13-dim MFCC, CMVN on means), exp/mono_ali and exp/mono/graph,
running `run.sh --stage 0 --stop-stage 5` first when they are missing. Prints a table and writes
<out>/fsdd_algorithms.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fsdd_recipe import DEFAULT_RECIPE, ensure_stages, final_valid, make_xconfig, recipe_env, train_command

ALGORITHMS = "ma,bmuf,easgd,asgd,ssgd,adpsgd,hadpsgd,adpsgd-delay1,post-local-sgd"
# Periods short enough that every algorithm synchronizes many times in one epoch.
EXTRA = {"ma": ["--averaging.period-frames=25600"], "hadpsgd": ["--averaging.group-size=2"]}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe-dir", default=str(DEFAULT_RECIPE))
    p.add_argument("--corpus", default=None)
    p.add_argument("--algorithms", default=ALGORITHMS)
    p.add_argument("--simulated", type=int, default=8, help="workers simulated on one rank")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--cell-dim", type=int, default=64)
    p.add_argument("--samples-per-iter", type=int, default=500, help="small enough for >= 8 archives (workers)")
    p.add_argument("--test-every", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    return p


def test_subset(recipe: Path, every: int, out: Path) -> Path:
    """data/test restricted to every `every`-th utterance (sorted), as a Kaldi data dir."""
    src = recipe / "data" / "test"
    keep = set(sorted(line.split()[0] for line in open(src / "utt2spk"))[::every])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("wav.scp", "text", "utt2spk", "feats.scp"):
        (out / name).write_text("".join(line for line in open(src / name) if line.split()[0] in keep))
    spk2utt = {}
    for line in open(out / "utt2spk"):
        utt, spk = line.split()
        spk2utt.setdefault(spk, []).append(utt)
    (out / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    shutil.copyfile(src / "cmvn.scp", out / "cmvn.scp")
    return out


def run_one(args, recipe: Path, algorithm: str, ranks: int, workers: int, test_dir: Path, work: Path) -> dict:
    exp = work / f"{algorithm}_{ranks}r_{workers}w"
    shutil.rmtree(exp, ignore_errors=True)
    (exp / "configs").mkdir(parents=True)
    feat_dir, ali_dir = str(recipe / "data" / "train"), str(recipe / "exp" / "mono_ali")
    make_xconfig(recipe, ali_dir, feat_dir, exp, args.cell_dim)
    cmd = train_command(feat_dir, ali_dir, exp, ranks=ranks, workers=workers, epochs=args.epochs,
                        samples_per_iter=args.samples_per_iter,
                        extra=[f"--averaging.algorithm={algorithm}", *EXTRA.get(algorithm, [])])
    t0 = time.perf_counter()
    with open(exp / "train_rnn.log", "w") as log:
        trained = subprocess.run(cmd, stdout=log, stderr=log, env=recipe_env(recipe)).returncode == 0
    train_s = time.perf_counter() - t0
    row = {"algorithm": algorithm, "ranks": ranks, "workers": workers, "trained": trained, "train_s": train_s}
    if not trained:
        return {**row, "error": (exp / "train_rnn.log").read_text()[-1500:]}
    row["valid_accuracy"] = final_valid(exp)["accuracy"]
    decode = exp / "decode_test_subset"
    r = subprocess.run(["steps/nnet3/decode.sh", "--nj", "1", "--extra-left-context", "20",
                        "--extra-left-context-initial", "0", "--frames-per-chunk", "20",
                        "exp/mono/graph", str(test_dir), str(decode)], cwd=recipe, env=recipe_env(recipe),
                       capture_output=True, text=True)
    wers = [float(line.split()[1]) for w in decode.glob("wer_*") for line in w.read_text().splitlines()
            if line.startswith("%WER")]
    row["decoded"] = r.returncode == 0 and bool(wers)
    row["wer"] = min(wers) if wers else None
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'algorithm':>15} {'ranks':>5} {'workers':>7} {'train s':>8} {'valid acc':>9} {'WER %':>6}")
    for r in rows:
        acc = f"{r['valid_accuracy']:.3f}" if "valid_accuracy" in r else "failed"
        wer = f"{r['wer']:.1f}" if r.get("wer") is not None else "-"
        print(f"{r['algorithm']:>15} {r['ranks']:>5} {r['workers']:>7} {r['train_s']:>8.1f} {acc:>9} {wer:>6}")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    recipe = Path(args.recipe_dir).resolve()
    ensure_stages(recipe, 5, ["data/train/feats.scp", "data/test/feats.scp", "exp/mono_ali/ali.1.gz",
                              "exp/mono/graph/HCLG.fst"], args.corpus)
    out = Path(args.out)
    work = out / "fsdd_algorithms_runs"
    test_dir = test_subset(recipe, args.test_every, work / "test_subset")
    rows = []
    for algorithm in args.algorithms.split(","):
        for ranks, workers in ((2, 2), (1, args.simulated)):
            rows.append(run_one(args, recipe, algorithm, ranks, workers, test_dir, work))
            print(f"{algorithm} ranks={ranks} workers={workers}: {rows[-1].get('wer')} % WER", flush=True)
    print_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fsdd_algorithms.json"
    path.write_text(json.dumps({"epochs": args.epochs, "cell_dim": args.cell_dim, "test_every": args.test_every,
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r.get("decoded") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
