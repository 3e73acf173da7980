"""Brute-force oracles for the chain objective: path enumeration on tiny graphs, straight from the
definitions in kaldi_avg/chain/denominator.py and numerator.py, in Python floats (double)."""
from __future__ import annotations

import math

import numpy as np
import torch

from kaldi_avg.chain.supervision_io import Supervision, SupervisionFst


def random_den_arrays(rng: np.random.Generator, num_states: int = 3, num_pdfs: int = 4, extra_arcs: int = 4):
    """A small strongly connected graph: a ring 0 -> 1 -> ... -> 0, a self-loop on state 0, and
    `extra_arcs` random arcs; random pdfs and probabilities (each state's out-probs summing to
    less than one, as den.fst's do); final probs on some states."""
    src = list(range(num_states)) + [0]
    dst = [(s + 1) % num_states for s in range(num_states)] + [0]
    for _ in range(extra_arcs):
        src.append(int(rng.integers(num_states)))
        dst.append(int(rng.integers(num_states)))
    src, dst = np.array(src), np.array(dst)
    pdf = rng.integers(num_pdfs, size=len(src))
    raw = rng.uniform(0.2, 1.0, size=len(src))
    final = np.where(rng.uniform(size=num_states) < 0.5, rng.uniform(0.1, 0.5, size=num_states), 0.0)
    tot = np.bincount(src, weights=raw, minlength=num_states) + final
    prob = raw / tot[src] * 0.999
    return src, dst, pdf, prob, final / tot * 0.999


def brute_force_den(src, dst, pdf, prob, init, x: np.ndarray, c: float):
    """(Z, gamma) by enumerating every path of the leaky HMM over T = len(x) frames: start in i
    with init(i); at each boundary t = 0..T stay (1) or leak to any j (c * init(j)); between
    boundaries an arc a out of the current state (prob_a * x[t, pdf_a]); final weight 1.
    gamma[t, n] = expected number of arcs with pdf n at frame t."""
    T, P = x.shape
    S = len(init)
    out_arcs = [[a for a in range(len(src)) if src[a] == s] for s in range(S)]
    Z = 0.0
    gamma = np.zeros((T, P))

    def boundary(t, state, weight, used):
        options = [(state, 1.0)]
        if c:
            options += [(j, c * init[j]) for j in range(S)]
        for s, w in options:
            step(t, s, weight * w, used)

    def step(t, state, weight, used):
        nonlocal Z
        if t == T:
            Z += weight
            for tt, n in used:
                gamma[tt, n] += weight
            return
        for a in out_arcs[state]:
            boundary(t + 1, dst[a], weight * prob[a] * x[t, pdf[a]], used + [(t, pdf[a])])

    for i in range(S):
        boundary(0, i, init[i], [])
    return Z, gamma / Z


def dense_den_logprob(src, dst, pdf, prob, init, x: np.ndarray, c: float) -> float:
    """log(1' L M_{T-1} L ... L M_0 L init), L = I + c init 1', in double, rescaled per frame."""
    S = len(init)
    L = np.eye(S) + c * np.outer(init, np.ones(S))
    v = L @ init
    log_scale = 0.0
    for t in range(x.shape[0]):
        M = np.zeros((S, S))
        np.add.at(M, (dst, src), prob * x[t, pdf])
        v = L @ (M @ v)
        s = v.sum()
        log_scale += math.log(s)
        v /= s
    return log_scale


def random_supervision_fst(rng: np.random.Generator, frames: int, num_pdfs: int, width: int = 2,
                           weighted: bool = True, finals: int = 1) -> SupervisionFst:
    """A layered acceptor: start state 0, `width` states per frame 1..T, random arcs (each state
    at least one arc forward, each later state at least one arc in), `finals` final states at
    frame T with random final weights."""
    layers = [[0]]
    n = 1
    for _ in range(frames):
        k = width if len(layers) < frames else max(finals, 1)
        layers.append(list(range(n, n + k)))
        n += k
    src, dst = [], []
    for t in range(frames):
        for s in layers[t]:
            for d in rng.choice(layers[t + 1], size=min(2, len(layers[t + 1])), replace=False):
                src.append(s)
                dst.append(int(d))
        for d in layers[t + 1]:
            if d not in dst:
                src.append(int(rng.choice(layers[t])))
                dst.append(d)
    src, dst = np.array(src), np.array(dst)
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    label = rng.integers(1, num_pdfs + 1, size=len(src))
    weight = (rng.uniform(0.0, 2.0, size=len(src)) if weighted else np.zeros(len(src))).astype(np.float32)
    final = np.full(n, np.inf, dtype=np.float32)
    for s in layers[-1]:
        final[s] = rng.uniform(0.0, 1.0) if weighted else 0.0
    return SupervisionFst(n, src, dst, label, weight, final)


def brute_force_num(fst: SupervisionFst, y: np.ndarray):
    """(log-prob, posteriors [T, pdfs]) of one sequence by enumerating the FST's paths."""
    T, P = y.shape
    post = np.zeros((T, P))
    total = 0.0
    out = [np.flatnonzero(fst.src == s) for s in range(fst.num_states)]

    def walk(state, t, logw, used):
        nonlocal total
        if np.isfinite(fst.final[state]):
            w = math.exp(logw - float(fst.final[state]))
            total += w
            for tt, n in used:
                post[tt, n] += w
        for a in out[state]:
            n = int(fst.label[a]) - 1
            walk(int(fst.dst[a]), t + 1, logw - float(fst.weight[a]) + y[t, n], used + [(t, n)])

    walk(0, 0, 0.0, [])
    return math.log(total), post / total


def kaldi_rows(per_seq: list[np.ndarray]) -> torch.Tensor:
    """[T * B, P] in Kaldi's frame-major order from B per-sequence [T, P] arrays."""
    return torch.as_tensor(np.stack(per_seq, axis=1).reshape(-1, per_seq[0].shape[1]))


def per_seq(rows: torch.Tensor, B: int) -> list[np.ndarray]:
    a = rows.detach().cpu().double().numpy()
    return [a.reshape(-1, B, a.shape[1])[:, b] for b in range(B)]


def supervision(fsts, frames, num_pdfs, weight=1.0) -> Supervision:
    return Supervision(weight, frames, num_pdfs, list(fsts))


def finite_difference_grad(f, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of the scalar f at every element of the matrix y."""
    fd = torch.zeros_like(y)
    with torch.no_grad():
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                e = torch.zeros_like(y)
                e[i, j] = eps
                fd[i, j] = (f(y + e) - f(y - e)) / (2 * eps)
    return fd
