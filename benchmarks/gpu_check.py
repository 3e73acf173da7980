"""The checks that need a CUDA device, in one run of a few minutes (run by gpu_check.sh).

  unit_tests      the tests that skip without CUDA (`pytest -k cuda` over the files that mention it)
  training        a 2-epoch run of steps/kaldi_avg/train_rnn.py with the FSDD recipe's LSTMP on one
                  device: $FSDD_FEAT_DIR and $FSDD_ALI_DIR (a prepared egs/fsdd/s5) when set, else a
                  synthetic FSDD-sized corpus (tests/train/experiment.py); wall seconds, frames/s
                  and data-wait share from its exp/log/data_wait.log
  prefetch        `kaldi_avg.data.prefetch.Prefetcher` feeding training steps (pinned memory and
                  non_blocking copies on CUDA): the share of the loop spent waiting for data
  natural_gradient NG-SGD (`OnlineNaturalGradient`) on the device: seconds per call, and gamma and
                  X_hat against the same calls on the CPU
  lstm_throughput the FSDD LSTMP's forward+backward (benchmarks/throughput.py's step without the
                  optimizer) against torch.nn.LSTM (cuDNN on CUDA) with the same cell, projection,
                  chunks and frames

`--dry-run` (implied without CUDA) runs the same code on the CPU at tiny sizes and writes the
JSON with "cuda": null. Each check records its error instead of stopping the others.

    benchmarks/gpu_check.sh [--dry-run] [--out benchmarks/results/gpu_check.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from throughput import MODELS, Step, synchronize

from kaldi_avg.data.prefetch import Prefetcher
from kaldi_avg.model.natural_gradient import OnlineNaturalGradient
from kaldi_avg.train.objective import compute_loss

REPO = Path(__file__).resolve().parents[1]
FSDD_XCONFIG = """input dim={dim} name=input
fixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2) affine-transform-file={exp}/configs/lda.mat
fast-lstmp-layer name=lstm1 cell-dim=128 recurrent-projection-dim=64 non-recurrent-projection-dim=64 delay=-1
output-layer name=output input=lstm1 output-delay=5 dim=NUM_PDFS max-change=1.5
"""
TIMING_RE = re.compile(r"iter \d+: jobs \d+ frames (\S+) train-seconds (\S+) data-wait-seconds (\S+)")


# -- sizes ------------------------------------------------------------------------------------
def sizes(dry_run: bool) -> dict:
    if dry_run:
        return {"utts": 24, "chunks": 8, "steps": 2, "ng_rows": 200, "ng_dim": 64, "samples_per_iter": 40}
    return {"utts": 3000, "chunks": 100, "steps": 20, "ng_rows": 6300, "ng_dim": 265, "samples_per_iter": 2000}


# -- the checks -------------------------------------------------------------------------------
def unit_tests(dry_run: bool) -> dict:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "cuda" in p.read_text() and "benchmarks" not in p.parts)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", *files], check=False, cwd=REPO,
                          capture_output=True, text=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return {"files": files, "returncode": proc.returncode, "summary": summary,
            "passed": proc.returncode in (0, 5)}   # 5: nothing collected


def training(device: str, dry_run: bool) -> dict:
    size = sizes(dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        feat_dir, ali_dir = os.environ.get("FSDD_FEAT_DIR"), os.environ.get("FSDD_ALI_DIR")
        exp = Path(tmp) / "exp"
        (exp / "configs").mkdir(parents=True)
        if feat_dir and ali_dir:
            source, dim, cmvn = "fsdd", 13, "--norm-means=true --norm-vars=false"
        else:
            sys.path.insert(0, str(REPO))
            from tests.train.experiment import make_experiment
            made = make_experiment(os.path.join(tmp, "synthetic"), num_utts=size["utts"])
            source, dim, feat_dir, ali_dir = "synthetic", 13, made["data"], made["ali"]
            cmvn = "--norm-means=false --norm-vars=false"   # the synthetic corpus has no cmvn.scp
        (exp / "configs" / "network.xconfig").write_text(FSDD_XCONFIG.format(dim=dim, exp=exp))
        cmd = [sys.executable, str(REPO / "steps" / "kaldi_avg" / "train_rnn.py"), "--stage=-10",
               f"--use-gpu={'yes' if device == 'cuda' else 'no'}", "--mpi.num-ranks=1",
               f"--feat.cmvn-opts={cmvn}", "--trainer.num-epochs=2",
               f"--trainer.samples-per-iter={size['samples_per_iter']}",
               "--trainer.optimization.num-jobs-initial=1", "--trainer.optimization.num-jobs-final=1",
               "--trainer.optimization.initial-effective-lrate=0.006",
               "--trainer.optimization.final-effective-lrate=0.0006",
               f"--trainer.rnn.num-chunk-per-minibatch={size['chunks']}", "--egs.chunk-width=20",
               "--egs.chunk-left-context=20", "--egs.chunk-right-context=0", "--egs.chunk-left-context-initial=0",
               "--egs.chunk-right-context-final=0", f"--feat-dir={feat_dir}", f"--ali-dir={ali_dir}", f"--dir={exp}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"train_rnn.py exited {proc.returncode}: {proc.stderr[-2000:]}")
        lines = (exp / "log" / "data_wait.log").read_text().splitlines()
        rows = [[float(x) for x in m.groups()] for m in map(TIMING_RE.search, lines) if m]
    frames, train_s, wait_s = (sum(r[i] for r in rows) for i in range(3))
    return {"data": source, "utterances": None if source == "fsdd" else size["utts"], "iterations": len(rows),
            "wall_s": wall, "frames": frames, "frames_per_s": frames / train_s if train_s else None,
            "data_wait_share": wait_s / train_s if train_s else None}


def prefetch(device: str, dry_run: bool) -> dict:
    """Training steps on minibatches that come through the Prefetcher from host memory."""
    size = sizes(dry_run)
    step = Step("lstmp", size["chunks"], device)
    host_batches = [step.mb.to("cpu") for _ in range(size["steps"])]
    step()                                        # warm-up
    synchronize(device)
    start = time.perf_counter()
    with Prefetcher(iter(host_batches), depth=2, device=device) as batches:
        for mb in batches:
            loss, _, _ = compute_loss(step.module, mb, step.min_deriv_time)
            loss.backward()
            step.optimizer.step(mb.num_chunks)
        synchronize(device)
        wait = batches.wait_seconds
    loop = time.perf_counter() - start
    return {"steps": size["steps"], "pinned": device == "cuda", "loop_s": loop, "wait_s": wait,
            "data_wait_share": wait / loop}


def natural_gradient(device: str, dry_run: bool) -> dict:
    size = sizes(dry_run)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(size["ng_rows"], size["ng_dim"], generator=g) for _ in range(5)]
    on_device, on_cpu = OnlineNaturalGradient(), OnlineNaturalGradient()
    worst_gamma, worst_x = 0.0, 0.0
    for X in batches:
        x_dev, gamma_dev = on_device.precondition(X.to(device))
        x_cpu, gamma_cpu = on_cpu.precondition(X)
        worst_gamma = max(worst_gamma, abs(float(gamma_dev) / float(gamma_cpu) - 1.0))
        worst_x = max(worst_x, float((x_dev.cpu() - x_cpu).norm() / x_cpu.norm()))
    X = batches[0].to(device)
    calls = 10
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        on_device.precondition(X)
    synchronize(device)
    return {"rows": size["ng_rows"], "dim": size["ng_dim"], "seconds_per_call": (time.perf_counter() - start) / calls,
            "gamma_max_rel_diff_vs_cpu": worst_gamma, "x_hat_max_rel_diff_vs_cpu": worst_x,
            "agrees": worst_gamma < 1e-6 and worst_x < 1e-6}


def lstm_throughput(device: str, dry_run: bool) -> dict:
    size = sizes(dry_run)
    step = Step("lstmp", size["chunks"], device)
    mb = step.mb
    num_frames = mb.features.shape[1]
    pdfs = MODELS["lstmp"][1]
    lstm = torch.nn.LSTM(5 * mb.features.shape[2], 128, proj_size=64, batch_first=True).to(device)
    output = torch.nn.Linear(64, pdfs).to(device)
    spliced = torch.randn(mb.num_chunks, num_frames, lstm.input_size, device=device)

    def ours():
        loss, _, _ = compute_loss(step.module, mb, step.min_deriv_time)
        loss.backward()

    def reference():
        y, _ = lstm(spliced)
        torch.log_softmax(output(y[:, -mb.targets.shape[1]:]), -1).sum().backward()

    result = {"chunks": mb.num_chunks, "frames_per_chunk": num_frames, "output_frames": step.frames}
    for name, fn in (("kaldi_avg_lstmp", ours), ("torch_nn_lstm", reference)):
        fn()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(size["steps"]):
            fn()
        synchronize(device)
        result[f"{name}_frames_per_s"] = step.frames * size["steps"] / (time.perf_counter() - start)
    result["ratio"] = result["kaldi_avg_lstmp_frames_per_s"] / result["torch_nn_lstm_frames_per_s"]
    result["cudnn"] = device == "cuda" and torch.backends.cudnn.is_available()
    return result


# -- the run ----------------------------------------------------------------------------------
def run_check(fn, *args) -> dict:
    start = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as error:
        out = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    out["seconds"] = time.perf_counter() - start
    print(f"{fn.__name__}: {'FAILED ' + out['error'] if 'error' in out else 'ok'} ({out['seconds']:.1f} s)",
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    args = p.parse_args(argv)
    has_cuda = torch.cuda.is_available()
    dry_run = args.dry_run or not has_cuda
    device = "cpu" if dry_run else "cuda"
    report = {"cuda": {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "cuda_version": torch.version.cuda} if not dry_run else None,
              "dry_run": dry_run, "device": device}
    report["unit_tests"] = run_check(unit_tests, dry_run)
    report["training"] = run_check(training, device, dry_run)
    report["prefetch"] = run_check(prefetch, device, dry_run)
    report["natural_gradient"] = run_check(natural_gradient, device, dry_run)
    report["lstm_throughput"] = run_check(lstm_throughput, device, dry_run)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed or not report["unit_tests"].get("passed", False) else 0


if __name__ == "__main__":
    sys.exit(main())
