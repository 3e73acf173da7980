"""The denominator forward-backward (kaldi_avg/chain/denominator.py) against path enumeration of the
leaky HMM's definition on tiny graphs, a dense matrix-product oracle and finite differences (all in
float64), and on Kaldi's FSDD den.fst: initial probabilities as chain-make-den-fst wrote them into
normalization.fst, values checkable by hand for a uniform network output."""
import math

import numpy as np
import pytest
import torch

from kaldi_avg.chain.den_graph import initial_probs_of_arcs
from kaldi_avg.chain.denominator import (
    DenominatorGraph,
    denominator_forward_backward,
    denominator_logprob,
    normalization_fst_initial_probs,
)

from .oracles import brute_force_den, dense_den_logprob, finite_difference_grad, kaldi_rows, per_seq, random_den_arrays

FIXTURES = "/work/shared/fixtures/kaldi-chain-fsdd/"
REL = 1e-6


def tiny_graph(seed, num_states=3, num_pdfs=4, extra_arcs=4):
    rng = np.random.default_rng(seed)
    src, dst, pdf, prob, final = random_den_arrays(rng, num_states, num_pdfs, extra_arcs)
    g = DenominatorGraph.from_arrays(num_states, num_pdfs, src, dst, pdf, prob, start=0, final_prob=final,
                                     dtype=torch.float64)
    return g, (src, dst, pdf, prob)


def arrays_of(g):
    """The graph's own arrays (Kaldi's arc order) for the oracles."""
    return (g.src.numpy(), g.dst.numpy(), g.pdf.numpy(), g.prob.double().numpy())


@pytest.fixture(scope="module")
def fsdd():
    return DenominatorGraph.from_fst(FIXTURES + "den.fst", 64)


@pytest.mark.parametrize("c", [0.0, 1e-5, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_backward_equals_path_enumeration(seed, c):
    g, _ = tiny_graph(seed)
    T, B = 3, 2
    rng = np.random.default_rng(100 + seed)
    ys = [rng.normal(0, 2, size=(T, g.num_pdfs)) for _ in range(B)]
    res = denominator_forward_backward(g, kaldi_rows(ys), B, c)
    init = g.initial_probs.numpy()
    for b, gamma in enumerate(per_seq(res.deriv, B)):
        Z, post = brute_force_den(*arrays_of(g), init, np.exp(ys[b]), c)
        assert float(res.logprob[b]) == pytest.approx(math.log(Z), rel=REL)
        np.testing.assert_allclose(gamma, post, rtol=REL, atol=1e-12)
    assert bool(res.ok)
    assert float(res.alpha_beta_product) == pytest.approx(B, rel=1e-12)


def test_clamped_outputs_use_the_clamped_likelihood_and_keep_the_posterior():
    """x = exp(clamp(y, -30, 30)) in the forward; the derivative is still gamma (Kaldi)."""
    g, _ = tiny_graph(3)
    y = np.array([[40.0, -35.0, 0.5, 1.0], [0.0, 31.0, -1.0, 2.0]])
    res = denominator_forward_backward(g, torch.as_tensor(y), 1, 0.1)
    Z, post = brute_force_den(*arrays_of(g), g.initial_probs.numpy(), np.exp(np.clip(y, -30, 30)), 0.1)
    assert float(res.logprob[0]) == pytest.approx(math.log(Z), rel=REL)
    np.testing.assert_allclose(res.deriv.numpy(), post, rtol=REL, atol=1e-12)


@pytest.mark.parametrize("c", [0.0, 1e-5, 0.1])
def test_gradient_equals_finite_differences(c):
    g, _ = tiny_graph(5, num_states=4, num_pdfs=5, extra_arcs=6)
    T, B = 4, 3
    y = torch.randn(T * B, g.num_pdfs, dtype=torch.float64, generator=torch.Generator().manual_seed(7),
                    requires_grad=True)
    seq_weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    f = lambda v: (denominator_logprob(v, g, B, c) * seq_weights).sum()
    f(y).backward()
    torch.testing.assert_close(y.grad, finite_difference_grad(f, y), rtol=1e-6, atol=1e-8)


def test_long_sequences_equal_the_dense_product_on_kaldis_den_graph(fsdd):
    """T = 60 frames on FSDD's den.fst: float64 within 1e-10, float32 (production) within 1e-5."""
    rng = np.random.default_rng(0)
    T, B = 60, 3
    ys = [rng.normal(0, 3, size=(T, 64)) for _ in range(B)]
    g64 = fsdd.to(dtype=torch.float64)
    init = g64.initial_probs.numpy()
    r64 = denominator_forward_backward(g64, kaldi_rows(ys), B, 0.1)
    r32 = denominator_forward_backward(fsdd, kaldi_rows(ys).float(), B, 0.1)
    for b in range(B):
        ref = dense_den_logprob(*arrays_of(g64), init, np.exp(ys[b]), 0.1)
        assert float(r64.logprob[b]) == pytest.approx(ref, rel=1e-10)
        assert float(r32.logprob[b]) == pytest.approx(ref, rel=1e-5)
    # posteriors of a frame sum to one; float32 close to float64
    assert torch.allclose(r64.deriv.sum(1), torch.ones(T * B, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(r32.deriv.double(), r64.deriv, atol=1e-5)
    assert bool(r32.ok) and bool(r64.ok)


def test_batched_equals_one_sequence_at_a_time(fsdd):
    rng = np.random.default_rng(1)
    ys = [rng.normal(0, 2, size=(7, 64)) for _ in range(4)]
    together = denominator_forward_backward(fsdd, kaldi_rows(ys).float(), 4, 1e-5)
    for b, y in enumerate(ys):
        alone = denominator_forward_backward(fsdd, torch.as_tensor(y).float(), 1, 1e-5)
        assert float(alone.logprob[0]) == pytest.approx(float(together.logprob[b]), rel=1e-6)
        torch.testing.assert_close(alone.deriv, torch.as_tensor(per_seq(together.deriv, 4)[b]).float(),
                                   rtol=1e-5, atol=1e-6)


# -- Kaldi's FSDD den graph ------------------------------------------------------------------------
def test_initial_probs_are_those_chain_make_den_fst_wrote(fsdd):
    """normalization.fst carries -log init(s) on its start arcs (GetNormalizationFst): they sum to
    one and equal SetInitialProbs computed here from den.fst, to the float weights' precision."""
    from_norm = normalization_fst_initial_probs(FIXTURES + "normalization.fst", FIXTURES + "den.fst")
    assert from_norm.sum() == pytest.approx(1.0, abs=1e-6)
    assert float(fsdd.initial_probs.double().sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(fsdd.initial_probs.double().numpy(), from_norm, rtol=2e-6)
    # den.fst's start state (2) has no incoming arcs: only the first of the 100 steps puts mass there
    assert float(fsdd.initial_probs[2]) == pytest.approx(0.01, rel=1e-6)
    assert fsdd.num_states == 40 and fsdd.num_arcs == 97     # den.fstinfo.txt


def test_initial_probs_from_arrays_equal_den_graphs(fsdd):
    """from_fst takes den_graph.initial_probs (what normalization.fst is written with); graphs
    given as arrays get initial_probs_of_arcs, the one computation under both: the same numbers."""
    import kaldifst
    fst = kaldifst.StdVectorFst.read(FIXTURES + "den.fst")
    final = np.array([0.0 if math.isinf(fst.final(s).value) else math.exp(-fst.final(s).value)
                      for s in range(fst.num_states)])
    p = initial_probs_of_arcs(fsdd.num_states, fst.start, fsdd.src.numpy(), fsdd.dst.numpy(),
                            fsdd.prob.double().numpy(), final)
    np.testing.assert_allclose(p.astype(np.float32), fsdd.initial_probs.numpy(), rtol=1e-6)


def test_initial_probs_of_a_two_state_chain():
    """0 -> 1 (p=1), 1 -> 1 (p=1): mass moves to 1 after one step: init = (1/100, 99/100)."""
    p = initial_probs_of_arcs(2, 0, np.array([0, 1]), np.array([1, 1]), np.ones(2), np.zeros(2))
    np.testing.assert_allclose(p, [0.01, 0.99], rtol=1e-12)


def test_uniform_output_one_frame_by_hand(fsdd):
    """y = 0, T = 1: Z = 1' L P L init = (1+c)^2 sum_s init(s) out(s), out(s) the sum of state s's
    arc probabilities. den.fst is pushed (PushSpecial): arcs + final sum to the same lambda in every
    state, so out(s) = lambda - final(s)."""
    import kaldifst
    fst = kaldifst.StdVectorFst.read(FIXTURES + "den.fst")
    final = np.array([0.0 if math.isinf(fst.final(s).value) else math.exp(-fst.final(s).value)
                      for s in range(fst.num_states)])
    g = fsdd.to(dtype=torch.float64)
    out = np.bincount(g.src.numpy(), weights=g.prob.numpy(), minlength=g.num_states)
    lam = out + final
    assert np.ptp(lam) < 1e-5                       # pushed: every state sums to ~0.99973
    init = g.initial_probs.numpy()
    for c in (1e-5, 0.1):
        expected = 2 * math.log1p(c) + math.log(float(init @ (lam.mean() - final)))
        res = denominator_forward_backward(g, torch.zeros(1, 64, dtype=torch.float64), 1, c)
        assert float(res.logprob[0]) == pytest.approx(expected, abs=1e-5)
        # exactly, with the BaseFloat initial probs' own sum s: Z = (1 + c s)^2 init . out
        s = init.sum()
        assert float(res.logprob[0]) == pytest.approx(2 * math.log1p(c * s) + math.log(float(init @ out)), rel=1e-12)


def test_shifting_a_frame_shifts_the_logprob(fsdd):
    """Every path takes one pdf per frame: y(t, .) + k_t adds sum_t k_t and leaves gamma alone."""
    y = torch.randn(12, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    k = torch.linspace(-3, 5, 12, dtype=torch.float64)
    g = fsdd.to(dtype=torch.float64)
    a = denominator_forward_backward(g, y, 2, 1e-5)
    b = denominator_forward_backward(g, y + k[:, None], 2, 1e-5)
    per_seq_shift = k.view(6, 2).sum(0)
    torch.testing.assert_close(b.logprob, a.logprob + per_seq_shift, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(b.deriv, a.deriv, rtol=1e-9, atol=1e-12)


def test_uniform_output_long_run_rate_is_the_perron_root(fsdd):
    """Many frames of y = 0: log Z / T tends to the log of the largest eigenvalue of L P. (FSDD's
    den.fst has no cycles but self-loops (fstinfo: 40 strongly connected components): P's
    eigenvalues are the self-loop probabilities, 0.4999; the leaks close the cycles and lift the
    rate to 0.527, with a complex pair at 0.514 close behind, hence the long runs.)"""
    g = fsdd.to(dtype=torch.float64)
    c = 1e-5
    S = g.num_states
    P = np.zeros((S, S))
    np.add.at(P, (g.dst.numpy(), g.src.numpy()), g.prob.numpy())
    init = g.initial_probs.numpy()
    root = max(abs(np.linalg.eigvals((np.eye(S) + c * np.outer(init, np.ones(S))) @ P)))
    r1 = denominator_forward_backward(g, torch.zeros(1000, 64, dtype=torch.float64), 1, c, compute_deriv=False)
    r2 = denominator_forward_backward(g, torch.zeros(2000, 64, dtype=torch.float64), 1, c, compute_deriv=False)
    assert float(r2.logprob[0] - r1.logprob[0]) / 1000 == pytest.approx(math.log(root), abs=1e-9)


def test_graph_from_arrays_checks_its_input():
    with pytest.raises(ValueError, match="pdf out of range"):
        DenominatorGraph.from_arrays(2, 2, [0], [1], [2], [0.5], start=0)
    with pytest.raises(ValueError, match="exactly one"):
        DenominatorGraph.from_arrays(2, 2, [0], [1], [1], start=0)
    with pytest.raises(ValueError, match="not in"):
        DenominatorGraph.from_arrays(2, 2, [0], [1], [1], [0.5], start=0)     # state 1: no way out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu(fsdd):
    y = torch.randn(50 * 8, 64, generator=torch.Generator().manual_seed(0))
    cpu = denominator_forward_backward(fsdd, y, 8, 1e-5)
    gpu = denominator_forward_backward(fsdd.to("cuda"), y.cuda(), 8, 1e-5)
    torch.testing.assert_close(gpu.logprob.cpu(), cpu.logprob, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gpu.deriv.cpu(), cpu.deriv, rtol=1e-4, atol=1e-5)
