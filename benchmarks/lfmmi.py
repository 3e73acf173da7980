"""LF-MMI cost per chunk: the denominator forward-backward (kaldi_avg/chain/denominator.py) against
the network's own forward + backward on the same chunks.

Two settings, each a den graph with a network of its size:

  fsdd        Kaldi's den.fst for FSDD (the chain fixture: 40 states, 97 arcs, 64 pdfs) with the
              FSDD recipe's TDNN (egs/fsdd/s5/local/nnet3/make_xconfig.sh --network tdnn: five
              256-dim ReLU+batchnorm layers) on 40-dim features, chain output of 64 pdfs
  synthetic   a random sparse graph of Switchboard's size (--synthetic-states 10000 states,
              --synthetic-pdfs 3000 pdfs, --synthetic-arcs-per-state 6.7: Kaldi's chain docs give
              ~200,000 arcs on ~30,000 states for a typical Switchboard den.fst; every state a
              self-loop and random arcs, random pdfs) with a Switchboard TDNN-F (swbd
              run_tdnn_7q's layers without i-vectors or the xent branch: 1536-dim, bottleneck
              160, 15 layers, prefinal 256) and 3000 outputs

A chunk is Kaldi's chain default: 150 input frames (--frames) and 50 output frames at
--frame-subsampling-factor 3. The denominator runs on [50 * chunks, pdfs] (Kaldi's row order,
random outputs), forward then backward as the objective does (DenominatorComputation);
"objective" is the whole compute_chain_objf (denominator, numerator over a random supervision of
~3 states per frame, penalties). The network (kaldi_avg.model.graph.NnetModule, training mode)
computes every output frame, so it is timed at 150 output frames (what it computes for a chunk
today) and at 50 (a lower bound for one that evaluates the subsampled frames only, as Kaldi's
compiled chain computations do); forward + backward of sum(output * random). Times are medians
of --repeats runs after one warm-up, per chunk.

    python benchmarks/lfmmi.py [--device cpu|cuda] [--settings fsdd,synthetic] [--chunks 16]
        [--threads 1] [--repeats 3] [--out benchmarks/results] [--name lfmmi]

Prints a table and writes <out>/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaldi_avg.chain.denominator import DenominatorComputation, DenominatorGraph  # noqa: E402
from kaldi_avg.chain.objective import ChainTrainingOptions, compute_chain_objf  # noqa: E402
from kaldi_avg.chain.supervision_io import Supervision, SupervisionFst  # noqa: E402
from kaldi_avg.kaldi.binary import KaldiWriter  # noqa: E402
from kaldi_avg.model.build import build_nnet, xconfig_context  # noqa: E402
from kaldi_avg.model.graph import NnetModule  # noqa: E402

FSDD_DEN = Path(os.environ.get("KALDI_CHAIN_FSDD",
                              REPO.parent / "shared" / "fixtures" / "kaldi-chain-fsdd")) / "den.fst"
FEAT_DIM = 40
FRAMES = 150
SUBSAMPLING = 3

FSDD_TDNN = """relu-batchnorm-layer name=tdnn1 dim=256
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=256
relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=256
relu-batchnorm-layer name=tdnn4 input=Append(-3,0,3) dim=256
relu-batchnorm-layer name=tdnn5 input=Append(-3,0,3) dim=256
output-layer name=output input=tdnn5 include-log-softmax=false dim={pdfs} max-change=1.5
"""
_TDNNF = "tdnnf-layer name=tdnnf{i} l2-regularize=0.002 dropout-proportion=0.0 bypass-scale=0.66 dim=1536 " \
         "bottleneck-dim=160 time-stride={stride}\n"
SWBD_TDNNF = ("relu-batchnorm-dropout-layer name=tdnn1 l2-regularize=0.002 dropout-proportion=0.0 "
              "dropout-per-dim=true dropout-per-dim-continuous=true dim=1536\n"
              + "".join(_TDNNF.format(i=i, stride=1 if i < 5 else 0 if i == 5 else 3) for i in range(2, 16))
              + "linear-component name=prefinal-l dim=256 l2-regularize=0.002 orthonormal-constraint=-1.0\n"
              "prefinal-layer name=prefinal-chain input=prefinal-l l2-regularize=0.002 big-dim=1536 small-dim=256\n"
              "output-layer name=output include-log-softmax=false dim={pdfs} l2-regularize=0.0005\n")


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, device: str, repeats: int) -> float:
    fn()                                   # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# -- graphs and supervisions ------------------------------------------------------------------------
def synthetic_graph(num_states: int, num_pdfs: int, arcs_per_state: float, seed: int = 0) -> DenominatorGraph:
    """Every state a self-loop and on average arcs_per_state - 1 arcs to random states, random
    pdfs, each state's arcs summing to 0.9997 (den.fst's are pushed to ~0.9997)."""
    rng = np.random.default_rng(seed)
    extra = int(round(num_states * (arcs_per_state - 1)))
    src = np.concatenate([np.arange(num_states), rng.integers(num_states, size=extra)])
    dst = np.concatenate([np.arange(num_states), rng.integers(num_states, size=extra)])
    pdf = rng.integers(num_pdfs, size=src.size)
    w = np.concatenate([np.ones(num_states), rng.uniform(0.1, 1.0, size=extra)])
    prob = w / np.bincount(src, weights=w, minlength=num_states)[src] * 0.9997
    return DenominatorGraph.from_arrays(num_states, num_pdfs, src, dst, pdf, prob, start=0)


def random_supervision(num_chunks: int, frames: int, num_pdfs: int, width: int = 3, seed: int = 0) -> Supervision:
    """Layered acceptors, `width` states per frame, each state two arcs forward (a chain
    supervision with tolerances has a few states per frame)."""
    rng = np.random.default_rng(seed)
    fsts = []
    for _ in range(num_chunks):
        layer = lambda t: [0] if t == 0 else list(range(1 + (t - 1) * width, 1 + t * width))
        src, dst = [], []
        for t in range(frames):
            nxt = layer(t + 1)
            for s in layer(t):
                for d in rng.choice(nxt, size=2, replace=False):
                    src.append(s)
                    dst.append(int(d))
            for d in nxt:
                if d not in dst[-2 * len(layer(t)):]:
                    src.append(layer(t)[0])
                    dst.append(d)
        n = 1 + frames * width
        final = np.full(n, np.inf, dtype=np.float32)
        final[layer(frames)] = 0.0
        order = np.argsort(src, kind="stable")
        fsts.append(SupervisionFst(n, np.array(src)[order], np.array(dst)[order],
                                   rng.integers(1, num_pdfs + 1, size=len(src)),
                                   rng.uniform(0, 2, size=len(src)).astype(np.float32), final))
    return Supervision(1.0, frames, num_pdfs, fsts)


# -- networks ------------------------------------------------------------------------------------
def build_network(body: str, pdfs: int, device: str) -> tuple[NnetModule, int, int]:
    dim = FEAT_DIM * 3
    with tempfile.TemporaryDirectory() as tmp:
        lda = os.path.join(tmp, "lda.mat")
        w = KaldiWriter(binary=True)
        w.header()
        w.matrix(np.hstack([np.eye(dim), np.zeros((dim, 1))]).astype(np.float32))
        Path(lda).write_bytes(w.getvalue())
        text = (f"input dim={FEAT_DIM} name=input\n"
                f"fixed-affine-layer name=lda input=Append(-1,0,1) affine-transform-file={lda}\n"
                + body.format(pdfs=pdfs))
        nnet = build_nnet(text, "lfmmi-benchmark")
        left, right = xconfig_context(text, "lfmmi-benchmark")
    return NnetModule(nnet).to(device).train(), left, right


def network_seconds(module: NnetModule, left: int, right: int, chunks: int, out_frames: int, device: str,
                    repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(chunks, left + out_frames + right, FEAT_DIM, generator=g).to(device)

    def step():
        out = module(feats, left, out_frames)
        (out * torch.ones_like(out)).sum().backward()
        module.zero_grad(set_to_none=True)
    return median_seconds(step, device, repeats)


# -- one setting ---------------------------------------------------------------------------------
def run_setting(name: str, graph: DenominatorGraph, body: str, args) -> dict:
    device, chunks = args.device, args.chunks
    graph = graph.to(device)
    T = FRAMES // SUBSAMPLING
    y = torch.randn(T * chunks, graph.num_pdfs, generator=torch.Generator().manual_seed(1)).to(device)
    sup = random_supervision(chunks, T, graph.num_pdfs)
    opts = ChainTrainingOptions(leaky_hmm_coefficient=0.1, l2_regularize=5e-5, out_of_range_every_minibatch=True)

    def den():
        comp = DenominatorComputation(graph, y, chunks, opts.leaky_hmm_coefficient)
        comp.forward()
        comp.backward(-1.0)

    def den_forward():
        DenominatorComputation(graph, y, chunks, opts.leaky_hmm_coefficient).forward()

    den_s = median_seconds(den, device, args.repeats)
    den_fwd_s = median_seconds(den_forward, device, args.repeats)
    objf_s = median_seconds(lambda: compute_chain_objf(y, sup, graph, opts), device, args.repeats)
    module, left, right = build_network(body, graph.num_pdfs, device)
    params = sum(p.numel() for p in module.parameters())
    net_full_s = network_seconds(module, left, right, chunks, FRAMES, device, args.repeats)
    net_sub_s = network_seconds(module, left, right, chunks, T, device, args.repeats)
    row = {
        "setting": name, "states": graph.num_states, "arcs": graph.num_arcs, "pdfs": graph.num_pdfs,
        "chunks": chunks, "input_frames": FRAMES, "output_frames": T,
        "network_params": params, "network_context": [left, right],
        "den_fwd_bwd_s_per_chunk": den_s / chunks,
        "den_fwd_s_per_chunk": den_fwd_s / chunks,
        "objective_s_per_chunk": objf_s / chunks,
        "net_fwd_bwd_s_per_chunk_150": net_full_s / chunks,
        "net_fwd_bwd_s_per_chunk_50": net_sub_s / chunks,
    }
    row["den_over_net_150"] = row["den_fwd_bwd_s_per_chunk"] / row["net_fwd_bwd_s_per_chunk_150"]
    row["den_over_net_50"] = row["den_fwd_bwd_s_per_chunk"] / row["net_fwd_bwd_s_per_chunk_50"]
    return row


def print_table(rows: list[dict], device: str, threads: int) -> None:
    print(f"\nLF-MMI per chunk ({FRAMES} input / {FRAMES // SUBSAMPLING} output frames), {device}, "
          f"{threads} thread(s); milliseconds")
    head = (f"{'setting':10s} {'states':>7s} {'arcs':>7s} {'pdfs':>5s} {'chunks':>6s} {'den F+B':>8s} "
            f"{'den F':>7s} {'objf':>7s} {'net@150':>8s} {'net@50':>7s} {'den/net150':>10s} {'den/net50':>9s}")
    print(head)
    for r in rows:
        print(f"{r['setting']:10s} {r['states']:7d} {r['arcs']:7d} {r['pdfs']:5d} {r['chunks']:6d} "
              f"{1e3 * r['den_fwd_bwd_s_per_chunk']:8.2f} {1e3 * r['den_fwd_s_per_chunk']:7.2f} "
              f"{1e3 * r['objective_s_per_chunk']:7.2f} {1e3 * r['net_fwd_bwd_s_per_chunk_150']:8.1f} "
              f"{1e3 * r['net_fwd_bwd_s_per_chunk_50']:7.1f} {r['den_over_net_150']:10.3f} {r['den_over_net_50']:9.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--settings", default="fsdd,synthetic")
    p.add_argument("--chunks", type=int, default=None, help="chunks per minibatch (default 16 on cpu, 128 on cuda)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-states", type=int, default=10000)
    p.add_argument("--synthetic-pdfs", type=int, default=3000)
    p.add_argument("--synthetic-arcs-per-state", type=float, default=6.7)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="lfmmi")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    args.chunks = args.chunks or (128 if args.device == "cuda" else 16)
    torch.set_num_threads(args.threads)
    rows = []
    for setting in args.settings.split(","):
        if setting == "fsdd":
            if not FSDD_DEN.exists():
                print(f"skipping fsdd: no {FSDD_DEN} (set KALDI_CHAIN_FSDD)", file=sys.stderr)
                continue
            rows.append(run_setting("fsdd", DenominatorGraph.from_fst(FSDD_DEN, 64), FSDD_TDNN, args))
        elif setting == "synthetic":
            g = synthetic_graph(args.synthetic_states, args.synthetic_pdfs, args.synthetic_arcs_per_state)
            rows.append(run_setting("synthetic", g, SWBD_TDNNF, args))
        else:
            p.error(f"unknown setting {setting!r}")
        print(json.dumps(rows[-1]), file=sys.stderr)
    print_table(rows, args.device, args.threads)
    info = {"device": args.device, "threads": args.threads, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "repeats": args.repeats, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
