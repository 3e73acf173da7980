"""The chain objective (kaldi_avg/chain/objective.py) and the numerator (numerator.py,
supervision_io.py): path enumeration on tiny graphs and finite differences in float64 (objective,
l2, xent, deriv weights, Kaldi's failure and out-of-range paths), Kaldi's supervision text format,
and the numerator on the FSDD supervisions Kaldi's chain-get-supervision wrote."""
import math
import random

import numpy as np
import pytest
import torch

from kaldi_avg.chain.denominator import DenominatorGraph, denominator_forward_backward
from kaldi_avg.chain.numerator import NumeratorGraph, numerator_forward_backward, numerator_logprob
from kaldi_avg.chain.objective import (
    ChainObjective,
    ChainProbStats,
    ChainTrainingOptions,
    compute_chain_objf,
)
from kaldi_avg.chain.supervision_io import (
    SupervisionFst,
    add_weight_to_supervision,
    merge_supervisions,
    parse_supervision_text,
    read_supervisions,
)

from .oracles import (
    brute_force_den,
    brute_force_num,
    finite_difference_grad,
    kaldi_rows,
    per_seq,
    random_den_arrays,
    random_supervision_fst,
    supervision,
)

FIXTURES = "/work/shared/fixtures/kaldi-chain-fsdd/"
REL = 1e-6


@pytest.fixture(scope="module")
def tiny():
    """A 3-state, 4-pdf den graph, two 4-frame supervisions over its pdfs, random outputs."""
    rng = np.random.default_rng(11)
    src, dst, pdf, prob, final = random_den_arrays(rng, 3, 4, 5)
    g = DenominatorGraph.from_arrays(3, 4, src, dst, pdf, prob, start=0, final_prob=final, dtype=torch.float64)
    T, B = 4, 2
    fsts = [random_supervision_fst(rng, T, 4, width=2, finals=2), random_supervision_fst(rng, T, 4, width=3)]
    ys = [rng.normal(0, 1.5, size=(T, 4)) for _ in range(B)]
    return g, fsts, ys, T, B


def oracle(g, fsts, ys, c, w, l2):
    """Brute-force objf, l2 term and derivative of ComputeChainObjfAndDeriv."""
    init = g.initial_probs.numpy()
    arrays = (g.src.numpy(), g.dst.numpy(), g.pdf.numpy(), g.prob.numpy())
    objf, derivs, num_posts = 0.0, [], []
    for fst, y in zip(fsts, ys):
        Z, den_post = brute_force_den(*arrays, init, np.exp(y), c)
        num_lp, num_post = brute_force_num(fst, y)
        objf += w * (num_lp - math.log(Z))
        derivs.append(w * (num_post - den_post) - w * l2 * y)
        num_posts.append(w * num_post)
    l2_term = -0.5 * w * l2 * sum((y * y).sum() for y in ys)
    return objf, l2_term, derivs, num_posts


# -- numerator -------------------------------------------------------------------------------------
def test_numerator_equals_path_enumeration(tiny):
    g, fsts, ys, T, B = tiny
    sup = supervision(fsts, T, 4, weight=0.7)
    res = numerator_forward_backward(NumeratorGraph.from_supervision(sup), kaldi_rows(ys))
    total = 0.0
    for b, (fst, y) in enumerate(zip(fsts, ys)):
        lp, post = brute_force_num(fst, y)
        assert float(res.logprob[b]) == pytest.approx(lp, rel=REL)
        np.testing.assert_allclose(per_seq(res.deriv, B)[b], 0.7 * post, rtol=REL, atol=1e-12)
        total += lp
    assert float(res.tot_log_prob) == pytest.approx(0.7 * total, rel=REL)
    # every path takes one arc per frame: the posteriors of a frame sum to the weight
    torch.testing.assert_close(res.deriv.sum(1), torch.full((T * B,), 0.7, dtype=torch.float64))


def test_numerator_gradient_equals_finite_differences(tiny):
    _, fsts, ys, T, B = tiny
    graph = NumeratorGraph.from_supervision(supervision(fsts, T, 4))
    y = kaldi_rows(ys).clone().requires_grad_(True)
    f = lambda v: (numerator_logprob(v, graph) * torch.tensor([1.0, -2.0], dtype=torch.float64)).sum()
    f(y).backward()
    torch.testing.assert_close(y.grad, finite_difference_grad(f, y), rtol=1e-6, atol=1e-8)


# -- the objective ---------------------------------------------------------------------------------
@pytest.mark.parametrize("c,w,l2", [(0.0, 1.0, 0.0), (1e-5, 1.0, 0.0), (0.1, 0.5, 5e-4), (0.3, 2.0, 0.01)])
def test_objective_and_derivative_equal_path_enumeration(tiny, c, w, l2):
    g, fsts, ys, T, B = tiny
    opts = ChainTrainingOptions(leaky_hmm_coefficient=c, l2_regularize=l2, out_of_range_regularize=0.0)
    r = compute_chain_objf(kaldi_rows(ys), supervision(fsts, T, 4, weight=w), g, opts)
    objf, l2_term, derivs, _ = oracle(g, fsts, ys, c, w, l2)
    assert float(r.objf) == pytest.approx(objf, rel=REL)
    assert float(r.l2_term) == pytest.approx(l2_term, rel=REL, abs=1e-15)
    assert r.weight == w * B * T
    assert bool(r.ok)
    np.testing.assert_allclose(r.nnet_output_deriv.numpy(), kaldi_rows(derivs).numpy(), rtol=REL, atol=1e-12)


def test_derivative_equals_finite_differences_of_objf_plus_l2(tiny):
    g, fsts, ys, T, B = tiny
    sup = supervision(fsts, T, 4, weight=1.3)
    opts = ChainTrainingOptions(leaky_hmm_coefficient=0.1, l2_regularize=0.002)
    y = kaldi_rows(ys)
    deriv = compute_chain_objf(y, sup, g, opts).nnet_output_deriv     # outputs within [-30, 30]: no penalty
    f = lambda v: float((lambda r: r.objf + r.l2_term)(compute_chain_objf(v, sup, g, opts, compute_deriv=False)))
    eps = 1e-6
    fd = torch.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            e = torch.zeros_like(y)
            e[i, j] = eps
            fd[i, j] = (f(y + e) - f(y - e)) / (2 * eps)
    torch.testing.assert_close(deriv, fd, rtol=1e-6, atol=1e-8)


def test_xent_branch_targets_are_the_numerator_posteriors(tiny):
    g, fsts, ys, T, B = tiny
    w, xr = 0.8, 0.25
    opts = ChainTrainingOptions(leaky_hmm_coefficient=0.1, xent_regularize=xr, out_of_range_regularize=0.0)
    rng = np.random.default_rng(5)
    xent_out = torch.log_softmax(torch.as_tensor(rng.normal(size=(T * B, 4))), dim=1)
    dw = torch.as_tensor(rng.uniform(0, 1, size=T * B))
    r = compute_chain_objf(kaldi_rows(ys), supervision(fsts, T, 4, weight=w), g, opts, xent_output=xent_out,
                           deriv_weights=dw)
    objf, _, derivs, num_posts = oracle(g, fsts, ys, 0.1, w, 0.0)
    posts = kaldi_rows(num_posts)
    np.testing.assert_allclose(r.xent_deriv.numpy(), posts.numpy(), rtol=REL, atol=1e-12)
    assert float(r.xent_objf) == pytest.approx(float((xent_out * posts).sum()), rel=REL)
    np.testing.assert_allclose(r.xent_output_deriv.numpy(), (xr * dw[:, None] * posts).numpy(), rtol=REL, atol=1e-12)
    # the chain derivative: deriv weights on the rows, the objective untouched
    np.testing.assert_allclose(r.nnet_output_deriv.numpy(), (dw[:, None] * kaldi_rows(derivs)).numpy(),
                               rtol=REL, atol=1e-12)
    assert float(r.objf) == pytest.approx(objf, rel=REL)


def test_chain_objective_module_backward_delivers_kaldis_derivatives(tiny):
    g, fsts, ys, T, B = tiny
    opts = ChainTrainingOptions(leaky_hmm_coefficient=0.1, l2_regularize=1e-3, xent_regularize=0.1,
                                out_of_range_regularize=0.0)
    y = kaldi_rows(ys).clone().requires_grad_(True)
    xent = torch.log_softmax(torch.randn(T * B, 4, dtype=torch.float64), 1).detach().requires_grad_(True)
    dw = torch.tensor([1.0, 0.0] * T, dtype=torch.float64)
    loss, r = ChainObjective(g, opts)(y, supervision(fsts, T, 4), xent_output=xent, deriv_weights=dw)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-(float(r.objf) + float(r.l2_term) + 0.1 * float(r.xent_objf)), rel=1e-12)
    torch.testing.assert_close(y.grad, -r.nnet_output_deriv)
    torch.testing.assert_close(xent.grad, -r.xent_output_deriv)
    assert torch.all(y.grad.view(T, B, 4)[:, 1] == 0)              # deriv weight 0 on sequence 1
    with torch.no_grad():                                            # compute-prob: no derivative
        loss2, r2 = ChainObjective(g, opts)(y, supervision(fsts, T, 4), xent_output=xent)
    assert r2.nnet_output_deriv is None and float(loss2) == pytest.approx(float(loss.detach()))


def test_rows_of_the_derivative_sum_to_zero_without_l2(tiny):
    g, fsts, ys, T, B = tiny
    r = compute_chain_objf(kaldi_rows(ys), supervision(fsts, T, 4, weight=2.0), g,
                           ChainTrainingOptions(leaky_hmm_coefficient=0.1))
    torch.testing.assert_close(r.nnet_output_deriv.sum(1), torch.zeros(T * B, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_out_of_range_penalty_is_kaldis():
    """PenalizeOutOfRange with limit 30: every minibatch at scale s, or Kaldi's coin at 2 s."""
    rng = np.random.default_rng(2)
    src, dst, pdf, prob, final = random_den_arrays(rng, 3, 4, 3)
    g = DenominatorGraph.from_arrays(3, 4, src, dst, pdf, prob, start=0, final_prob=final, dtype=torch.float64)
    fst = random_supervision_fst(rng, 2, 4)
    y = torch.tensor([[35.0, -40.0, 0.0, 1.0], [29.0, 31.0, -31.0, 2.0]], dtype=torch.float64)
    sup = supervision([fst], 2, 4)
    base = compute_chain_objf(y, sup, g, ChainTrainingOptions(out_of_range_regularize=0.0))
    penalty = -0.01 * torch.tensor([[5.0, -10.0, 0, 0], [0, 1.0, -1.0, 0]], dtype=torch.float64)
    every = compute_chain_objf(y, sup, g, ChainTrainingOptions(out_of_range_every_minibatch=True))
    torch.testing.assert_close(every.nnet_output_deriv, base.nnet_output_deriv + penalty)
    assert float(every.objf) == float(base.objf)                    # derivative only
    flips = {}
    for seed in range(8):
        rng_seed = random.Random(seed)
        heads = random.Random(seed).randint(0, 1) == 0
        d = compute_chain_objf(y, sup, g, ChainTrainingOptions(), rng=rng_seed).nnet_output_deriv
        flips[heads] = d
    torch.testing.assert_close(flips[True], base.nnet_output_deriv + 2 * penalty)
    torch.testing.assert_close(flips[False], base.nnet_output_deriv)


def test_failure_sets_minus_ten_per_frame_and_keeps_only_the_l2_derivative(tiny):
    g, fsts, ys, T, B = tiny
    y = kaldi_rows(ys).clone()
    y[3, 1] = float("nan")
    opts = ChainTrainingOptions(l2_regularize=0.01, xent_regularize=0.1)
    r = compute_chain_objf(y, supervision(fsts, T, 4, weight=0.5), g, opts,
                           xent_output=torch.zeros_like(y))
    assert not bool(r.ok)
    assert float(r.objf) == -10.0 * r.weight
    torch.testing.assert_close(r.nnet_output_deriv, -0.5 * 0.01 * y, equal_nan=True)
    assert torch.all(r.xent_deriv == 0)


def test_compute_prob_lines_are_kaldis():
    stats = ChainProbStats()
    for objf, l2, xent in ((-12.5, 0.0, -30.0), (-7.5, 0.0, -10.0)):
        from kaldi_avg.chain.objective import ChainObjf
        r = ChainObjf(torch.tensor(objf), torch.tensor(l2), 100.0, torch.tensor(0.0), torch.tensor(0.0),
                      torch.tensor(True), xent_objf=torch.tensor(xent))
        stats.add(r)
    assert stats.lines() == ["Overall log-probability for 'output' is -0.1 per frame, over 200 frames.",
                             "Overall log-probability for 'output-xent' is -0.2 per frame, over 200 frames."]
    stats.output.tot_l2_term = -0.5
    assert stats.lines()[0] == ("Overall log-probability for 'output' is -0.1 + -0.0025 = -0.1025 per frame, "
                                "over 200 frames.")


# -- Kaldi's supervision text format ---------------------------------------------------------------
def fst_text(fst: SupervisionFst) -> str:
    lines = [f"{s}\t{d}\t{lab}\t{lab}" + (f"\t{float(w)!r}" if w else "")
             for s, d, lab, w in zip(fst.src, fst.dst, fst.label, fst.weight)]
    lines += [f"{s}" + (f"\t{float(fst.final[s])!r}" if fst.final[s] else "") for s in np.flatnonzero(np.isfinite(fst.final))]
    return "\n".join(lines)


def kaldi_merged(fsts: list[SupervisionFst]) -> SupervisionFst:
    """What MergeSupervision's Concat + RmEpsilon make: each final state of sequence k gets
    sequence k+1's start arcs with its final weight added; the next start state disappears."""
    src, dst, label, weight = [], [], [], []
    offset = 0
    prev_finals: list[tuple[int, float]] = []
    for k, fst in enumerate(fsts):
        # states of this sequence but its start: old s -> offset + s - 1 (start is 0)
        def new(s, k=k, offset=offset):
            return offset + s - 1 if k else s
        for s, d, lab, w in zip(fst.src, fst.dst, fst.label, fst.weight):
            ss = [(q, fw) for q, fw in prev_finals] if (k and s == 0) else [(new(s), 0.0)]
            for q, fw in ss:
                src.append(q)
                dst.append(new(d))
                label.append(lab)
                weight.append(np.float32(w + fw))
        prev_finals = [(new(s), float(fst.final[s])) for s in np.flatnonzero(np.isfinite(fst.final))]
        offset = (offset + fst.num_states - 1) if k else fst.num_states
    n = offset
    final = np.full(n, np.inf, dtype=np.float32)
    for q, fw in prev_finals:
        final[q] = fw
    src, dst = np.array(src), np.array(dst)
    o = np.argsort(src, kind="stable")
    return SupervisionFst(n, src[o], dst[o], np.array(label)[o], np.array(weight, np.float32)[o], final)


def test_merged_supervision_text_splits_into_its_sequences():
    """A Kaldi-merged FST of 3 sequences (2 final states each, distinct final weights) reads back
    as 3 FSTs whose numerator equals that of the originals."""
    rng = np.random.default_rng(4)
    T = 5
    fsts = [random_supervision_fst(rng, T, 6, width=2, finals=2) for _ in range(3)]
    merged = kaldi_merged(fsts)
    text = (f"utt-a <Supervision> <Weight> 1 <NumSequences> 3 <FramesPerSeq> {T} <LabelDim> 6 <End2End> F \n"
            f"{fst_text(merged)}\n\n<AlignmentPdfs> [ 1 2 3 ] </Supervision> utt-b <Supervision> <Weight> 1 "
            f"<NumSequences> 1 <FramesPerSeq> {T} <LabelDim> 6 <End2End> F \n{fst_text(fsts[0])}\n\n</Supervision> \n")
    (k1, s1), (k2, s2) = list(parse_supervision_text(text))
    assert (k1, k2) == ("utt-a", "utt-b") and s1.num_sequences == 3 and s2.num_sequences == 1
    y = torch.randn(T * 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = numerator_forward_backward(NumeratorGraph.from_supervision(s1), y)
    want = numerator_forward_backward(NumeratorGraph.from_supervision(supervision(fsts, T, 6)), y)
    assert float(got.tot_log_prob) == pytest.approx(float(want.tot_log_prob), rel=1e-6)
    torch.testing.assert_close(got.deriv, want.deriv, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def fsdd():
    sups = list(read_supervisions(FIXTURES + "supervision.20utt.txt"))
    return DenominatorGraph.from_fst(FIXTURES + "den.fst", 64), sups


def test_reads_kaldis_supervision_archive(fsdd):
    _, sups = fsdd
    keys = [k for k, _ in sups]
    assert keys == open(FIXTURES + "utts20.txt").read().split()
    frames = [s.frames_per_sequence for _, s in sups]
    assert frames[:5] == [10, 19, 22, 21, 18]
    k, s = sups[0]
    assert (s.weight, s.num_sequences, s.label_dim) == (1.0, 1, 64)
    assert s.fsts[0].num_states == 28 and s.fsts[0].num_arcs == 42


def test_numerator_on_fsdd_supervisions(fsdd):
    """Random network outputs on the 20 FSDD supervisions: the posteriors of every frame sum to
    one; with the normalization FST composed in (as nnet3-chain-get-egs does), every numerator
    path is a denominator path with the same weight, so num <= den for every sequence and the
    objective is never positive; utterances of one length batch as one minibatch."""
    g, sups = fsdd
    gen = torch.Generator().manual_seed(0)
    by_len = {}
    for _, s in sups:
        by_len.setdefault(s.frames_per_sequence, []).append(s)
        y = 4 * torch.randn(s.frames_per_sequence, 64, generator=gen, dtype=torch.float64)
        num = numerator_forward_backward(NumeratorGraph.from_supervision(s), y)
        torch.testing.assert_close(num.deriv.sum(1), torch.ones(s.frames_per_sequence, dtype=torch.float64))
        normalized = add_weight_to_supervision(s, FIXTURES + "normalization.fst")
        nnum = numerator_forward_backward(NumeratorGraph.from_supervision(normalized), y)
        den = denominator_forward_backward(g.to(dtype=torch.float64), y, 1, 1e-5, compute_deriv=False)
        assert float(nnum.logprob[0]) < float(den.logprob[0])
        # the normalized paths add the den graph's initial and transition log-probs (all < 0)
        assert float(nnum.logprob[0]) < float(num.logprob[0])
        r = compute_chain_objf(y.float(), normalized, g, ChainTrainingOptions())
        assert float(r.objf) < 0 and bool(r.ok)
        torch.testing.assert_close(r.nnet_output_deriv.sum(1), torch.zeros(s.frames_per_sequence), atol=1e-5, rtol=0)
    same = max(by_len.values(), key=len)
    merged = merge_supervisions(same)
    T, B = merged.frames_per_sequence, merged.num_sequences
    assert B >= 3
    y = torch.randn(T * B, 64, generator=gen)
    together = compute_chain_objf(y, merged, g, ChainTrainingOptions(out_of_range_regularize=0.0))
    apart = [compute_chain_objf(torch.as_tensor(ys).float(), s, g, ChainTrainingOptions(out_of_range_regularize=0.0))
             for ys, s in zip(per_seq(y, B), same)]
    assert float(together.objf) == pytest.approx(sum(float(a.objf) for a in apart), rel=1e-5)
    for b, a in enumerate(apart):
        torch.testing.assert_close(torch.as_tensor(per_seq(together.nnet_output_deriv, B)[b]).float(),
                                   a.nnet_output_deriv, rtol=1e-4, atol=1e-5)


def test_supervision_errors_name_the_problem():
    with pytest.raises(ValueError, match="end-to-end"):
        list(parse_supervision_text("k <Supervision> <Weight> 1 <NumSequences> 1 <FramesPerSeq> 1 <LabelDim> 2 "
                                    "<End2End> T \n"))
    with pytest.raises(ValueError, match="Mismatch"):
        a = supervision([random_supervision_fst(np.random.default_rng(0), 2, 3)], 2, 3)
        b = supervision([random_supervision_fst(np.random.default_rng(1), 3, 3)], 3, 3)
        merge_supervisions([a, b])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_objective_equals_cpu_without_host_syncs(fsdd):
    """The objective on CUDA: the CPU's values, and no host synchronisation once the graphs are on
    the device (torch's sync debug mode raises on one)."""
    g, sups = fsdd
    same = [s for _, s in sups if s.frames_per_sequence == sups[0][1].frames_per_sequence]
    sup = merge_supervisions([add_weight_to_supervision(s, FIXTURES + "normalization.fst") for s in same])
    T, B = sup.frames_per_sequence, sup.num_sequences
    y = torch.randn(T * B, 64, generator=torch.Generator().manual_seed(0))
    xent = torch.log_softmax(torch.randn(T * B, 64), 1)
    opts = ChainTrainingOptions(l2_regularize=1e-4, xent_regularize=0.1, out_of_range_every_minibatch=True)
    cpu = compute_chain_objf(y, sup, g, opts, xent_output=xent)
    g_cuda, num_cuda = g.to("cuda"), NumeratorGraph.from_supervision(sup, device="cuda")
    y_cuda, xent_cuda = y.cuda(), xent.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = compute_chain_objf(y_cuda, num_cuda, g_cuda, opts, xent_output=xent_cuda)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(gpu.objf) == pytest.approx(float(cpu.objf), rel=1e-5)
    torch.testing.assert_close(gpu.nnet_output_deriv.cpu(), cpu.nnet_output_deriv, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu.xent_output_deriv.cpu(), cpu.xent_output_deriv, rtol=1e-4, atol=1e-6)
