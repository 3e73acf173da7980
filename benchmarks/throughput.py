"""Training-step throughput per core against the GEMM bound measured in the same run.

One step is what a worker does per minibatch (`kaldi_avg.train.learner`): `compute_loss`
(forward), backward (with NG-SGD) and `KaldiSgd.step`, on synthetic features in Kaldi's
minibatch layout: chunks of 20 output frames with 40 frames of extra left context (plus the
model's own context), `--min-deriv-time` as train_rnn.py sets it (deriv-truncate-margin 8).
Steady state, as in a job of hundreds of minibatches: the NG-SGD preconditioners update their
estimate on each of their first 10 minibatches and then every update-period-th (4 for these
layers), so the steps are timed after 11 warm-up steps and over a multiple of 4.

  frames/s          output frames (chunks x 20) per second of whole steps
  GEMM bound        the steps' matrix products (every aten mm/addmm(_)/bmm they run, forward,
                    backward and NG-SGD, recorded with their shapes and dtypes over as many steps
                    as are timed) each timed alone with torch.matmul at that shape; frames /
                    (summed float32 times per step) is the float32 bound; the share of it that is
                    NG-SGD's (run by the preconditioners) is reported next to it
  ratio             frames/s over the float32 bound: the share of the step the float32 GEMMs
                    would take at the speed they run alone

Models: `lstmp` = the FSDD recipe's network (egs/fsdd/s5/local/nnet3/make_xconfig.sh --cell-dim
128 --projection-dim 64, label delay 5) with a 40-dim input; `lstm4x800` = 4 fast-lstm-layers of
800 cells (the seed papers' size), same input and front end. One profiled step per model gives
the operators where the time goes.

    python benchmarks/throughput.py [--models lstmp,lstm4x800] [--chunks lstmp=100,lstm4x800=32]
        [--steps 4] [--repeats 5] [--threads 1] [--device cpu] [--out benchmarks/results] [--name throughput]

Writes <out>/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils._python_dispatch import TorchDispatchMode

from kaldi_avg.data.collate import Minibatch
from kaldi_avg.kaldi.binary import KaldiWriter
from kaldi_avg.model.build import build_nnet, xconfig_context
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.natural_gradient import NUM_INITIAL_UPDATES, OnlineNaturalGradient
from kaldi_avg.train.host_memory import keep_freed_host_memory
from kaldi_avg.train.objective import compute_loss
from kaldi_avg.train.optim import KaldiSgd

REPO = Path(__file__).resolve().parents[1]
FEAT_DIM = 40
SPLICE = (-2, -1, 0, 1, 2)
CHUNK_WIDTH = 20
CHUNK_LEFT_CONTEXT = 40
DERIV_TRUNCATE_MARGIN = 8
LABEL_DELAY = 5

MODELS = {
    # name: (hidden layers, pdfs, default chunks per minibatch)
    "lstmp": (("fast-lstmp-layer name=lstm1 cell-dim=128 recurrent-projection-dim=64 "
               "non-recurrent-projection-dim=64 delay=-1\n"), 67, 100),
    "lstm4x800": ("".join(f"fast-lstm-layer name=lstm{i} cell-dim=800 delay=-1\n" for i in range(1, 5)), 3000, 32),
}
GEMM_OPS = {"mm", "addmm", "addmm_", "bmm", "baddbmm", "baddbmm_"}
WARM_UP_STEPS = NUM_INITIAL_UPDATES + 1   # past the preconditioners' every-minibatch start


def xconfig(model: str, lda_path: str) -> str:
    layers, pdfs, _ = MODELS[model]
    last = layers.strip().splitlines()[-1].split()[1].split("=")[1]
    return (f"input dim={FEAT_DIM} name=input\n"
            f"fixed-affine-layer name=lda delay={LABEL_DELAY} input=Append({','.join(map(str, SPLICE))}) "
            f"affine-transform-file={lda_path}\n"
            f"{layers}output-layer name=output input={last} output-delay={LABEL_DELAY} dim={pdfs} max-change=1.5\n")


def build_model(model: str, device: str, seed: int = 0) -> tuple[NnetModule, int, int]:
    """(module in training mode, model left context, model right context). The LDA matrix is a
    fixed identity: the benchmark times the network, not the transform's values."""
    dim = FEAT_DIM * len(SPLICE)
    with tempfile.TemporaryDirectory() as tmp:
        lda_path = os.path.join(tmp, "lda.mat")
        w = KaldiWriter(binary=True)
        w.header()
        w.matrix(np.hstack([np.eye(dim), np.zeros((dim, 1))]).astype(np.float32))
        Path(lda_path).write_bytes(w.getvalue())
        text = xconfig(model, lda_path)
        nnet = build_nnet(text, model, seed=seed)
        left, right = xconfig_context(text, model)
    return NnetModule(nnet).to(device).train(), left, right


def synthetic_minibatch(num_chunks: int, num_pdfs: int, left: int, right: int, device: str,
                        width: int = CHUNK_WIDTH, chunk_left_context: int = CHUNK_LEFT_CONTEXT,
                        seed: int = 0) -> Minibatch:
    g = torch.Generator().manual_seed(seed)
    total_left = left + chunk_left_context
    feats = torch.randn(num_chunks, total_left + width + right, FEAT_DIM, generator=g)
    targets = torch.randint(0, num_pdfs, (num_chunks, width), generator=g)
    return Minibatch(feats, targets, torch.ones(num_chunks, width), None, float(num_chunks * width), total_left,
                     tuple(f"synthetic-{n}" for n in range(num_chunks)), 0).to(device)


class Step:
    """One worker's training step on a fixed minibatch (Learner.backward + Learner.update)."""

    def __init__(self, model: str, num_chunks: int, device: str):
        self.module, left, right = build_model(model, device)
        self.module.reset_preconditioners()
        self.mb = synthetic_minibatch(num_chunks, MODELS[model][1], left, right, device)
        self.min_deriv_time = -(DERIV_TRUNCATE_MARGIN + left)
        self.optimizer = KaldiSgd(self.module, learning_rate=0.0005, momentum=0.0, max_param_change=2.0)
        self.device = device

    @property
    def frames(self) -> int:
        return self.mb.targets.numel()

    def __call__(self) -> None:
        loss, _, _ = compute_loss(self.module, self.mb, self.min_deriv_time)
        loss.backward()
        self.optimizer.step(self.mb.num_chunks)

    def seconds(self, steps: int, repeats: int) -> float:
        """Seconds per step: the median over `repeats` rounds of `steps` steps (after the caller's
        warm-up; a shared machine's noise moves single rounds by 10% or more)."""
        rounds = []
        for _ in range(repeats):
            synchronize(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                self()
            synchronize(self.device)
            rounds.append((time.perf_counter() - start) / steps)
        return float(np.median(rounds))


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# -- the GEMM bound ---------------------------------------------------------------------------
class GemmRecorder(TorchDispatchMode):
    """Counts the (batch, m, k, n, dtype, part) of every matrix product dispatched while active;
    part is "ng" inside an NG-SGD preconditioner, else "model"."""

    def __init__(self):
        super().__init__()
        self.shapes: Counter = Counter()
        self.part = "model"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in GEMM_OPS:
            a, b = (args[1], args[2]) if name.startswith(("addmm", "baddbmm")) else (args[0], args[1])
            batch = a.shape[0] if a.dim() == 3 else 1
            self.shapes[(batch, a.shape[-2], a.shape[-1], b.shape[-1], str(a.dtype).split(".")[-1],
                         self.part)] += 1
        return func(*args, **(kwargs or {}))


def gemm_seconds(batch: int, m: int, k: int, n: int, dtype: str, device: str, min_seconds: float = 0.02) -> float:
    """Seconds of one torch.matmul at this shape: the best of 3 timings of a loop of >= min_seconds."""
    dt = getattr(torch, dtype)
    lead = (batch,) if batch > 1 else ()
    a = torch.randn(*lead, m, k, dtype=dt, device=device)
    b = torch.randn(*lead, k, n, dtype=dt, device=device)
    torch.matmul(a, b)
    reps = 1
    while True:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        reps *= 2
    best = elapsed / reps
    for _ in range(2):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def gemm_bound(step: Step, steps: int) -> dict:
    """FLOPs and GEMM-alone seconds per step (averaged over `steps` steps), per dtype, with the
    NG-SGD preconditioners' share."""
    rec = GemmRecorder()
    precondition = OnlineNaturalGradient.precondition

    def tagged(self, X):
        rec.part = "ng"
        try:
            return precondition(self, X)
        finally:
            rec.part = "model"
    OnlineNaturalGradient.precondition = tagged
    try:
        with rec:
            for _ in range(steps):
                step()
    finally:
        OnlineNaturalGradient.precondition = precondition
    out = {}
    for (batch, m, k, n, dtype, part), count in rec.shapes.items():
        flops = 2.0 * batch * m * k * n
        seconds = gemm_seconds(batch, m, k, n, dtype, step.device)
        d = out.setdefault(dtype, {"gemm_calls": 0, "gflop": 0.0, "gemm_s": 0.0, "ng_gemm_s": 0.0, "shapes": []})
        d["gemm_calls"] += count / steps
        d["gflop"] += count * flops / 1e9 / steps
        d["gemm_s"] += count * seconds / steps
        d["ng_gemm_s"] += count * seconds / steps if part == "ng" else 0.0
        d["shapes"].append({"batch": batch, "m": m, "k": k, "n": n, "part": part, "calls_per_step": count / steps,
                            "gflop_per_s": flops / seconds / 1e9})
    for d in out.values():
        d["gflop_per_s"] = d["gflop"] / d["gemm_s"]
        d["shapes"].sort(key=lambda s: -s["calls_per_step"] * s["m"] * s["k"] * s["n"] * s["batch"])
    return out


# -- the profile ------------------------------------------------------------------------------
def profile(step: Step, top: int) -> list[dict]:
    """Operators of one step by self time (torch.profiler), largest first."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if step.device.startswith("cuda") else [])
    with torch_profile(activities=activities) as prof:
        step()
        synchronize(step.device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in rows]


def measure(model: str, num_chunks: int, steps: int, repeats: int, device: str, top: int) -> dict:
    step = Step(model, num_chunks, device)
    for _ in range(WARM_UP_STEPS):
        step()
    seconds = step.seconds(steps, repeats)
    bound = gemm_bound(step, steps)
    fp32 = bound["float32"]
    other_s = sum(d["gemm_s"] for dtype, d in bound.items() if dtype != "float32")
    return {"model": model, "chunks": num_chunks, "frames_per_step": step.frames, "steps": steps, "repeats": repeats,
            "step_s": seconds, "frames_per_s": step.frames / seconds,
            "fp32_gflop": fp32["gflop"], "fp32_gemm_gflop_per_s": fp32["gflop_per_s"],
            "fp32_bound_frames_per_s": step.frames / fp32["gemm_s"], "ratio": fp32["gemm_s"] / seconds,
            "ng_share_of_bound": fp32["ng_gemm_s"] / fp32["gemm_s"], "other_dtype_gemm_share": other_s / seconds,
            "gemms": bound, "profile": profile(step, top),
            "parameters": sum(p.numel() for p in step.module.parameters())}


def print_table(rows: list[dict], threads: int) -> None:
    head = (f"{'model':>10} {'chunks':>6} {'step s':>7} {'frames/s':>9} {'fp32 GFLOP':>10} {'GEMM GFLOP/s':>12} "
            f"{'bound fr/s':>10} {'ratio':>6} {'NG share':>8}")
    print(f"{threads} thread(s)\n{head}\n{'-' * len(head)}")
    for r in rows:
        print(f"{r['model']:>10} {r['chunks']:>6} {r['step_s']:>7.3f} {r['frames_per_s']:>9.0f} "
              f"{r['fp32_gflop']:>10.2f} "
              f"{r['fp32_gemm_gflop_per_s']:>12.1f} {r['fp32_bound_frames_per_s']:>10.0f} {r['ratio']:>6.2f} "
              f"{100 * r['ng_share_of_bound']:>7.1f}%")
    for r in rows:
        print(f"\n{r['model']}: one step's operators by self time")
        for p in r["profile"]:
            print(f"  {100 * p['share']:5.1f}%  {p['self_ms']:9.1f} ms  {p['calls']:6d}x  {p['op']}")


def parse_chunks(text: str) -> dict[str, int]:
    out = {m: spec[2] for m, spec in MODELS.items()}
    for item in filter(None, text.split(",")):
        name, value = item.split("=")
        out[name] = int(value)
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--chunks", default="", help="chunks per minibatch, e.g. lstmp=100,lstm4x800=32 (those defaults)")
    p.add_argument("--steps", type=int, default=4,
                   help=f"timed steps per model, after {WARM_UP_STEPS} warm-up steps (a multiple of 4: see above)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of --steps steps; the median round counts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--top", type=int, default=15, help="operators listed from the profile")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="throughput", help="JSON file name (without .json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator_tuned = keep_freed_host_memory()   # as the trainer does (kaldi_avg/train/host_memory.py)
    chunks = parse_chunks(args.chunks)
    rows = [measure(m, chunks[m], args.steps, args.repeats, args.device, args.top) for m in args.models.split(",")]
    print_table(rows, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    path.write_text(json.dumps({"threads": args.threads, "device": args.device, "torch": torch.__version__,
                                "glibc_allocator_tuned": allocator_tuned,
                                "chunk_width": CHUNK_WIDTH, "chunk_left_context": CHUNK_LEFT_CONTEXT,
                                "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
