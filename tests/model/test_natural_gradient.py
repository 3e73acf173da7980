"""Kaldi's online natural gradient (natural-gradient-online.{h,cc}) and its use by components.

The preconditioner is checked against a direct dense implementation of the same recursion (the
idea of Kaldi's natural-gradient-online-test.cc), and for the properties the method promises;
the components are checked to see exactly the rows Kaldi's consolidated Update sees."""
import math

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.natural_gradient import OnlineNaturalGradient

from .networks import randomized, spec_5_10_config

EPS, DELTA = 1.0e-10, 5.0e-4


class DenseReference:
    """F = R^T D R + rho I kept explicitly; X_hat = beta X G^{-1}; one power step per call."""

    def __init__(self, rank, num_samples_history=2000.0, alpha=4.0):
        self.rank, self.nsh, self.alpha = rank, num_samples_history, alpha
        self.R = None

    def _init(self, X):
        D = X.shape[1]
        self.rank = min(self.rank, D - 1)
        R = np.zeros((self.rank, D))
        for r in range(self.rank):
            cols = list(range(r, D, self.rank))
            R[r, cols] = 1.0 / math.sqrt(1.21 + len(cols) - 1)
            R[r, r] *= 1.1
        self.R, self.d, self.rho = R, np.full(self.rank, EPS), EPS
        for _ in range(3):
            self._step(X)

    def __call__(self, X):
        if self.R is None:
            self._init(X)
        return self._step(X)

    def _step(self, X):
        N, D = X.shape
        R, d, rho = self.R, self.d, self.rho
        eta = min(0.9, 1.0 - math.exp(-N / self.nsh))
        F = R.T @ np.diag(d) @ R + rho * np.eye(D)
        S = X.T @ X / N
        T = eta * S + (1 - eta) * F
        Y = R @ T
        c, U = np.linalg.eigh(Y @ Y.T)
        c, U = c[::-1], U[:, ::-1]
        c = np.maximum(c, (rho * (1 - eta)) ** 2)
        R1 = np.diag(c ** -0.5) @ U.T @ Y
        rho1 = (eta * np.trace(S) + (1 - eta) * (D * rho + d.sum()) - np.sqrt(c).sum()) / (D - self.rank)
        d1 = np.sqrt(c) - rho1
        floor = max(EPS, DELTA * np.sqrt(c).max())
        rho1, d1 = max(rho1, floor), np.maximum(d1, floor)
        G = F + self.alpha / D * np.trace(F) * np.eye(D)
        beta = rho + self.alpha / D * np.trace(F)
        X_hat = beta * X @ np.linalg.inv(G)
        tr_x, tr_h = (X * X).sum(), (X_hat * X_hat).sum()
        gamma = 1.0 if tr_h == 0 else math.sqrt(tr_x / tr_h)
        q, _ = np.linalg.qr(R1.T)  # keep R orthonormal (Gram-Schmidt), signs as R1's rows
        self.R = (q * np.sign(np.sum(q * R1.T, axis=0))).T
        self.d, self.rho = d1, rho1
        return X_hat, gamma


def _batch(rng, N, D, big):
    X = rng.standard_normal((N, D))
    return X + np.outer(rng.standard_normal(N), big)


@pytest.mark.parametrize("seed", range(4))
def test_equals_dense_recursion(seed):
    rng = np.random.default_rng(seed)
    R = int(rng.integers(1, 12))
    N, D = 2 * R + int(rng.integers(0, 20)), R + 1 + int(rng.integers(0, 15))
    big = rng.standard_normal(D) * float(rng.integers(1, 20)) ** 2
    zero = seed == 3
    ref, ours = DenseReference(R), OnlineNaturalGradient(R, update_period=1)
    for _ in range(30):
        X = np.zeros((N, D)) if zero else _batch(rng, N, D, big)
        want, want_gamma = ref(X)
        got, gamma = ours.precondition(torch.from_numpy(X))
        assert np.isfinite(got.numpy()).all()
        np.testing.assert_allclose(got.numpy(), want, atol=1e-7 * (1 + np.abs(want).max()), rtol=1e-5)
        assert gamma == pytest.approx(want_gamma, rel=1e-6)
        # Frobenius norm preserved by the scale; directions stay within 90 degrees of the input.
        assert (gamma * got).norm().item() == pytest.approx(float(np.linalg.norm(X)), rel=1e-9, abs=1e-12)
        assert (np.sum(X * got.numpy(), axis=1) >= -1e-12).all()


def test_is_beta_x_inverse_of_smoothed_fisher():
    rng = np.random.default_rng(5)
    p = OnlineNaturalGradient(rank=4, update_period=3, alpha=4.0)
    for _it in range(25):
        X = torch.from_numpy(_batch(rng, 16, 9, rng.standard_normal(9) * 3))
        if p.initialized:
            F = p.fisher()
            trF = float(torch.trace(F))
            G = F + 4.0 / 9 * trF * torch.eye(9, dtype=torch.float64)
            beta = p.rho + 4.0 / 9 * trF
            want = beta * X @ torch.linalg.inv(G)
            got, _ = p.precondition(X)
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
        else:
            p.precondition(X)
        # invariants Kaldi's SelfTest checks: R orthonormal, floors respected
        e = 1.0 / (p._beta(p.rho, p.d, 9) / p.d + 1.0)
        Rm = p.W / e.sqrt()[:, None]
        torch.testing.assert_close(Rm @ Rm.t(), torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-6)
        assert p.rho >= EPS and float(p.d.min()) >= EPS


def test_fisher_follows_the_data_scatter():
    """With a strongly anisotropic source, the estimate's top direction is the source's."""
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(12)
    direction /= np.linalg.norm(direction)
    p = OnlineNaturalGradient(rank=3, update_period=1, num_samples_history=200.0)
    for _ in range(40):
        X = rng.standard_normal((64, 12)) * 0.1 + np.outer(rng.standard_normal(64) * 5, direction)
        p.precondition(torch.from_numpy(X))
    w, v = torch.linalg.eigh(p.fisher())
    assert abs(float(v[:, -1] @ torch.from_numpy(direction))) > 0.99
    assert float(w[-1]) == pytest.approx(25.0, rel=0.3)


def test_update_period_after_ten_updates():
    rng = np.random.default_rng(2)
    p = OnlineNaturalGradient(rank=2, update_period=4)
    changed = []
    for _ in range(30):
        before = p.W.clone() if p.initialized else None
        p.precondition(torch.from_numpy(rng.standard_normal((8, 6))))
        changed.append(before is None or not torch.equal(before, p.W))
    assert all(changed[:11])                     # calls t = 0..10 all update
    assert [i for i in range(11, 30) if changed[i]] == [14, 18, 22, 26]
    p.frozen = True
    W = p.W.clone()
    p.precondition(torch.from_numpy(rng.standard_normal((8, 6))))
    assert torch.equal(W, p.W)


def test_edge_dimensions():
    # dim 1: identity
    p = OnlineNaturalGradient(rank=5)
    X = torch.randn(7, 1, dtype=torch.float64)
    got, s = p.precondition(X)
    assert torch.equal(got, X) and s == 1.0
    # rank >= dim: rank becomes dim - 1
    p = OnlineNaturalGradient(rank=20)
    got, s = p.precondition(torch.randn(30, 4, dtype=torch.float64))
    assert p.rank == 3 and p.W.shape == (3, 4) and math.isfinite(s)
    # fewer rows than the rank (one initial iteration), then more; float32 data
    p = OnlineNaturalGradient(rank=6)
    for n in (2, 3, 50, 1):
        X = torch.randn(n, 10)
        got, s = p.precondition(X)
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        assert float((s * got).norm()) == pytest.approx(float(X.norm()), rel=1e-4)
    # all-zero minibatches, first and later: no NaN, unit scale
    p = OnlineNaturalGradient(rank=2)
    for X in (torch.zeros(5, 4), torch.randn(5, 4), torch.zeros(5, 4)):
        got, s = p.precondition(X)
        assert torch.isfinite(got).all() and math.isfinite(s)
    assert s == 1.0 and not got.any()


def test_reset_starts_over():
    rng = np.random.default_rng(3)
    batches = [torch.from_numpy(rng.standard_normal((12, 7))) for _ in range(5)]
    p = OnlineNaturalGradient(rank=3)
    first = [p.precondition(b)[0] for b in batches]
    p.reset()
    assert not p.initialized and p.t == 0
    again = [p.precondition(b)[0] for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


# -- components -------------------------------------------------------------------------------
@pytest.fixture()
def nnet():
    return randomized(Nnet.from_config(spec_5_10_config()))


NG_COMPONENTS = ("lstm1.W_all", "lstm1.W_rp", "lstm1.lstm_nonlin", "lstm2.W_all", "lstm2.lstm_nonlin",
                 "output.affine")


def _step(m, feats, min_deriv_time=-2, max_deriv_time=None):
    feats = feats.clone().requires_grad_(True)
    out = m(feats, left_context=4, num_frames=10, min_deriv_time=min_deriv_time, max_deriv_time=max_deriv_time)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    return out.detach(), feats.grad.clone(), grads


class _Identity:
    """A preconditioner that changes nothing and records the matrices it is given."""

    def __init__(self):
        self.seen = []

    def precondition(self, X):
        self.seen.append(X.clone())
        return X.clone(), 1.0


def test_components_using_natural_gradient(nnet):
    m = NnetModule(nnet)
    assert sorted(n for n in nnet.components if m.op(n).has_natural_gradient) == sorted(NG_COMPONENTS)
    w_all = m.op("lstm1.W_all").preconditioners
    assert (w_all[0].configured_rank, w_all[1].configured_rank) == (7, 16)   # (14+1)/2, (32+1)/2
    assert (w_all[0].update_period, w_all[0].num_samples_history, w_all[0].alpha) == (4, 2000.0, 4.0)
    lstm = m.op("lstm1.lstm_nonlin").preconditioners[0]
    assert (lstm.configured_rank, lstm.update_period, lstm.num_samples_history) == (20, 2, 1000.0)


def test_identity_preconditioner_gives_exactly_the_plain_gradient(nnet):
    """Checks the rows each component collects: every frame of the recurrent loops with the input
    columns in order and the bias column of ones, nothing before min_deriv_time."""
    feats = torch.randn(3, 20, 4)
    plain = NnetModule(nnet).train()
    plain.set_natural_gradient(False)
    m = NnetModule(nnet).train()
    fakes = {}
    for name in NG_COMPONENTS:
        op = m.op(name)
        fakes[name] = op.preconditioners = tuple(_Identity() for _ in op.preconditioners)
    for mdt in (-2, 2):
        for mod in (m, plain):
            mod.zero_grad()
        out0, dx0, g0 = _step(plain, feats, mdt)
        out, dx, g = _step(m, feats, mdt)
        assert torch.equal(out, out0) and torch.equal(dx, dx0)
        for n in g0:
            torch.testing.assert_close(g[n], g0[n], rtol=1e-5, atol=1e-5)
    # rows seen with min_deriv_time 3: 3 sequences x frames 3..11 for the first LSTM (its loop
    # runs to frame 11 for lstm2's offset -2 and the output delay 2), with a column of ones
    # appended to the affine inputs; the peepholes as one 3 x C matrix; output.affine (frames
    # 2..11) without frame 2, whose derivatives Kaldi would not compute.
    _step(m, feats, 3)
    x_in = fakes["lstm1.W_all"][0].seen[-1]
    assert x_in.shape == (3 * 9, 14 + 1) and torch.equal(x_in[:, -1], torch.ones(27))
    assert fakes["lstm1.W_all"][1].seen[-1].shape == (27, 32)
    assert fakes["lstm1.lstm_nonlin"][0].seen[-1].shape == (3, 8)
    assert fakes["output.affine"][0].seen[-1].shape == (3 * 9, 7)
    _step(m, feats, 3, max_deriv_time=8)   # nor after max_deriv_time: frames 3..8
    assert fakes["output.affine"][0].seen[-1].shape == (3 * 6, 7)


def test_natural_gradient_is_kaldis_update(nnet):
    """output.affine (outside any loop): grad = s_in s_out G_hat^T [X 1]_hat from fresh
    preconditioners on the layer's input rows and output derivatives."""
    m = NnetModule(nnet).train()
    feats = torch.randn(2, 20, 4)
    rows = {}
    op = m.op("output.affine")
    op.register_forward_hook(lambda mod, args, out: rows.update(x=args[0].detach().reshape(-1, 6))
                             if torch.is_grad_enabled() else None)
    out = m(feats, left_context=4, num_frames=10)
    weights = torch.linspace(-1, 1, out.shape[-1])
    (out * weights).sum().backward()
    # derivative of the backpropagated sum w.r.t. output.affine's output, through the log-softmax
    g = weights - torch.softmax(out.detach().reshape(-1, 8), -1) * weights.sum()
    pin, pout = OnlineNaturalGradient(3, 4), OnlineNaturalGradient(4, 4)   # ranks (6+1)/2, (8+1)/2
    x1 = torch.cat([rows["x"], torch.ones(20, 1)], 1)
    x_hat, s_in = pin.precondition(x1)
    g_hat, s_out = pout.precondition(g)
    torch.testing.assert_close(op.linear_params.grad, s_in * s_out * g_hat.t() @ x_hat[:, :-1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(op.bias_params.grad, s_in * s_out * g_hat.t() @ x_hat[:, -1], rtol=1e-4, atol=1e-5)


def test_outputs_unchanged_and_state_outside_the_module(nnet):
    feats = torch.randn(2, 20, 4)
    m = NnetModule(nnet).train()
    keys = set(m.state_dict())
    nparams = len(list(m.parameters()))
    plain = NnetModule(nnet).train()
    plain.set_natural_gradient(False)
    out, dx, g = _step(m, feats)
    out0, dx0, g0 = _step(plain, feats)
    assert torch.equal(out, out0) and torch.equal(dx, dx0)
    assert not torch.allclose(g["ops.lstm1:W_all.linear_params"], g0["ops.lstm1:W_all.linear_params"])
    assert set(m.state_dict()) == keys and len(list(m.parameters())) == nparams
    states = [p for n in NG_COMPONENTS for p in m.op(n).preconditioners]
    assert all(p.initialized and p.t == 1 for p in states)
    m.reset_preconditioners()
    assert all(not p.initialized and p.t == 0 for p in states)
    # a fresh job repeats the first job's first step exactly
    m.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(_step(m, feats)[2].values(), g.values()))


def test_no_update_of_the_estimate_outside_training(nnet):
    m = NnetModule(nnet)
    feats = torch.randn(2, 20, 4)
    m.eval()
    m(feats, left_context=4, num_frames=10).sum().backward()
    m.train()
    with torch.no_grad():
        m(feats, left_context=4, num_frames=10)
    assert all(p.t == 0 for n in NG_COMPONENTS for p in m.op(n).preconditioners)


def test_is_gradient_and_linear_flag_give_plain_gradient():
    cfg = ("input-node name=input dim=5\n"
           "component name=lin type=LinearComponent input-dim=5 output-dim=4 use-natural-gradient=false\n"
           "component-node name=lin component=lin input=input\n"
           "component name=lin2 type=LinearComponent input-dim=4 output-dim=4\n"
           "component-node name=lin2 component=lin2 input=lin\n"
           "component name=aff type=NaturalGradientAffineComponent input-dim=4 output-dim=3\n"
           "component-node name=aff component=aff input=lin2\n"
           "output-node name=output input=aff\n")
    nnet = Nnet.from_config(cfg)
    nnet.components["aff"].is_gradient = True
    m = NnetModule(nnet).train()
    assert not m.op("lin").has_natural_gradient
    assert m.op("lin2").use_natural_gradient and not m.op("aff").use_natural_gradient
    plain = NnetModule(nnet).train()
    plain.set_natural_gradient(False)
    feats = torch.randn(2, 6, 5)
    _, _, g = _step2(m, feats)
    _, _, g0 = _step2(plain, feats)
    assert torch.equal(g["ops.aff.linear_params"], g0["ops.aff.linear_params"])
    assert torch.equal(g["ops.lin.linear_params"], g0["ops.lin.linear_params"])
    assert not torch.allclose(g["ops.lin2.linear_params"], g0["ops.lin2.linear_params"])


def _step2(m, feats):
    out = m(feats, left_context=0, num_frames=6)
    out.pow(2).sum().backward()
    return out, None, {n: p.grad.clone() for n, p in m.named_parameters()}
