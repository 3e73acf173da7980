"""Training statistics of sigmoid/tanh units (Kaldi's ValueAvg/DerivAvg/Count): accumulated as
nnet3-train accumulates them, without changing outputs or gradients, and written like Kaldi."""
import struct

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.binary import KaldiWriter
from kaldi_avg.kaldi.nnet3.am import read_nnet3_bytes
from kaldi_avg.kaldi.nnet3.components import LstmNonlinearityComponent, SigmoidComponent, TanhComponent
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp, lstm_nonlinearity, training_statistics
from kaldi_avg.parallel import FlatParams

from .networks import randomized, spec_5_10_config


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm_stats(x: np.ndarray, peep: np.ndarray):
    """Direct computation of Kaldi's LSTM statistics (cu-math.cc BackpropLstmNonlinearity):
    values of i_t, f_t, tanh(c_part), o_t, tanh(c_t) and their derivatives, summed over rows."""
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    C = peep.shape[1]
    i_part, f_part, c_part, o_part, c_prev = (x[:, k * C:(k + 1) * C] for k in range(5))
    if x.shape[1] == 5 * C + 3:
        i_scale, f_scale, o_scale = (x[:, 5 * C + k:5 * C + k + 1] for k in range(3))
    else:
        i_scale = f_scale = o_scale = 1.0
    i_t = _sigmoid(i_part + peep[0] * c_prev)
    f_t = _sigmoid(f_part + peep[1] * c_prev)
    tanh_c_part = np.tanh(c_part)
    c_t = f_t * f_scale * c_prev + i_t * i_scale * tanh_c_part
    o_t = _sigmoid(o_part + peep[2] * c_t)
    tanh_c_t = np.tanh(c_t)
    del o_scale
    values = np.stack([i_t, f_t, tanh_c_part, o_t, tanh_c_t])          # (5, rows, C)
    derivs = np.stack([i_t * (1 - i_t), f_t * (1 - f_t), 1 - tanh_c_part ** 2,
                       o_t * (1 - o_t), 1 - tanh_c_t ** 2])
    return values.sum(1), derivs.sum(1), float(x.shape[0])


def lstm_component(C=3, use_dropout=False, seed=0):
    rng = np.random.default_rng(seed)
    return LstmNonlinearityComponent(peepholes=rng.normal(0, 0.5, (3, C)).astype(np.float32),
                                     value_avg=np.zeros((5, C), np.float32),
                                     deriv_avg=np.zeros((5, C), np.float32), use_dropout=use_dropout)


@pytest.mark.parametrize("use_dropout", [False, True])
def test_lstm_stats_equal_direct_computation(use_dropout):
    comp = lstm_component(use_dropout=use_dropout)
    op = ComponentOp(comp).train()
    rng = np.random.default_rng(1)
    xs = [rng.normal(0, 1.5, (4, 2, comp.input_dim())).astype(np.float32) for _ in range(3)]
    if use_dropout:
        for x in xs:
            x[..., -3:] = rng.integers(0, 2, x[..., -3:].shape)
    for x in xs:  # several calls (e.g. the frames of a recurrent loop) add up
        op(torch.tensor(x, requires_grad=True))
    value_sum, deriv_sum, count = numpy_lstm_stats(np.concatenate([x.reshape(-1, x.shape[-1]) for x in xs]),
                                                   comp.peepholes.astype(np.float64))
    got_value, got_deriv, got_count = op.activation_stats()
    assert got_count == count == 24
    np.testing.assert_allclose(got_value, value_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_deriv, deriv_sum, rtol=1e-5, atol=1e-5)
    op.write_back()
    assert comp.count == 24.0 and comp.value_avg.dtype == np.float32 and comp.value_avg.shape == (5, 3)
    np.testing.assert_allclose(comp.value_avg, value_sum / count, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(comp.deriv_avg, deriv_sum / count, rtol=1e-5, atol=1e-6)


def test_lstm_stats_only_for_backpropagated_training_frames():
    comp = lstm_component()
    op = ComponentOp(comp)
    x = torch.randn(5, comp.input_dim())
    op.eval()
    op(x)
    op.train()
    with torch.no_grad():
        op(x)
    assert op.activation_stats()[2] == 0.0
    op(x.requires_grad_())
    assert op.activation_stats()[2] == 5.0


@pytest.mark.parametrize("cls, deriv", [(SigmoidComponent, lambda y: y * (1 - y)),
                                        (TanhComponent, lambda y: 1 - y * y)])
def test_sigmoid_tanh_stats_equal_direct_computation(cls, deriv):
    comp = cls(dim=4)
    op = ComponentOp(comp).train()
    x = np.random.default_rng(2).normal(0, 2, (3, 5, 4)).astype(np.float32)
    with torch.no_grad():  # forward statistics (Kaldi's StoreStats): every training frame
        op(torch.from_numpy(x))
    y = _sigmoid(x.astype(np.float64)) if cls is SigmoidComponent else np.tanh(x.astype(np.float64))
    y = y.reshape(-1, 4)
    value_sum, deriv_sum, count = op.activation_stats()
    assert count == 15.0
    np.testing.assert_allclose(value_sum, y.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(deriv_sum, deriv(y).sum(0), rtol=1e-5, atol=1e-5)
    op.write_back()
    assert comp.count == 15.0
    np.testing.assert_allclose(comp.deriv_avg, deriv(y).mean(0), rtol=1e-5, atol=1e-6)


def test_fresh_sigmoid_stays_empty_and_zeroed_stats_keep_shape():
    comp = SigmoidComponent(dim=3)
    op = ComponentOp(comp)
    op.write_back()
    assert comp.value_avg.size == 0 and comp.deriv_avg.size == 0 and comp.count == 0.0
    op.train()(torch.randn(2, 3))
    op.zero_stats()
    op.write_back()
    assert comp.value_avg.shape == (3,) and not comp.value_avg.any() and comp.count == 0.0


@pytest.fixture()
def nnet():
    return randomized(Nnet.from_config(spec_5_10_config()))


def _train_step(m, feats, min_deriv_time=-2):
    out = m(feats, left_context=4, num_frames=10, min_deriv_time=min_deriv_time)
    out[..., 0].sum().backward()
    return out


def test_stats_in_recurrent_loops_equal_the_inputs_seen(nnet):
    m = NnetModule(nnet, fuse_lstm=False).train()   # stepped node by node, so the hook sees each frame
    seen = []
    op = m.op("lstm1.lstm_nonlin")
    op.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().numpy().copy())
                             if torch.is_grad_enabled() else None)
    feats = torch.randn(2, 20, 4)
    _train_step(m, feats)
    assert len(seen) == 14  # frames -2..11, one call per frame, 2 sequences each
    value_sum, deriv_sum, count = numpy_lstm_stats(np.concatenate(seen), op.peepholes.detach().double().numpy())
    got = op.activation_stats()
    assert got[2] == count == 28.0
    np.testing.assert_allclose(got[0], value_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], deriv_sum, rtol=1e-5, atol=1e-5)
    fused = NnetModule(nnet).train()
    _train_step(fused, feats)
    for want, have in zip(got, fused.op("lstm1.lstm_nonlin").activation_stats()):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)
    # Frames before min-deriv-time get no derivatives, so (as in Kaldi) no statistics.
    m.zero_stats()
    _train_step(m, feats, min_deriv_time=2)
    assert op.activation_stats()[2] == 2 * 10


def test_outputs_and_gradients_unchanged(nnet, monkeypatch):
    feats = torch.randn(2, 20, 4)

    def run():
        m = NnetModule(nnet).train()
        out = _train_step(m, feats)
        return out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}, m

    out, grads, m = run()
    assert m.op("lstm2.lstm_nonlin").activation_stats()[2] > 0
    monkeypatch.setattr(ComponentOp, "add_activation_sums", lambda self, *sums: None)
    out0, grads0, m0 = run()
    assert m0.op("lstm2.lstm_nonlin").activation_stats()[2] == 0
    assert torch.equal(out, out0)
    assert all(torch.equal(grads[n], grads0[n]) for n in grads)
    with torch.no_grad():
        assert torch.equal(NnetModule(nnet).eval()(feats, left_context=4, num_frames=10), out)


def test_lstm_function_with_stats_is_the_same_function():
    comp = lstm_component(C=4)
    x = torch.randn(6, 20, requires_grad=True)
    peep = torch.tensor(comp.peepholes, requires_grad=True)
    got = []
    y1 = lstm_nonlinearity(x, peep, got.append)
    g1 = torch.autograd.grad(y1.square().sum(), (x, peep))
    y0 = lstm_nonlinearity(x, peep)
    g0 = torch.autograd.grad(y0.square().sum(), (x, peep))
    assert torch.equal(y0, y1) and all(torch.equal(a, b) for a, b in zip(g0, g1))
    assert got[0].shape == (6, 5, 4) and not got[0].requires_grad


def test_write_back_binary_round_trip_and_reload(nnet):
    m = NnetModule(nnet).train()
    _train_step(m, torch.randn(3, 20, 4))
    m.write_back()
    lstm = nnet.components["lstm1.lstm_nonlin"]
    assert lstm.count == 42.0 and lstm.deriv_avg.any()
    back = read_nnet3_bytes(nnet.to_bytes(True), "<test>").nnet
    for name in ("lstm1.lstm_nonlin", "lstm2.lstm_nonlin"):
        a, b = nnet.components[name], back.components[name]
        assert b.count == a.count
        assert np.array_equal(a.value_avg, b.value_avg) and np.array_equal(a.deriv_avg, b.deriv_avg)
    # A module made from the written model starts from the same sums.
    again = NnetModule(back).op("lstm1.lstm_nonlin").activation_stats()
    want = m.op("lstm1.lstm_nonlin").activation_stats()
    for g, w in zip(again, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_written_layout_is_kaldis(nnet):
    """Kaldi's LstmNonlinearityComponent::Write: <ValueAvg>/<DerivAvg> as float matrices 5 x C of
    sum / count, <SelfRepairProb> 5 floats, then <Count> as a double (docs/kaldi-formats.md 4.7)."""
    m = NnetModule(nnet).train()
    _train_step(m, torch.randn(2, 20, 4))
    m.write_back()
    comp = nnet.components["lstm2.lstm_nonlin"]
    value_sum, deriv_sum, count = m.op("lstm2.lstm_nonlin").activation_stats()
    w = KaldiWriter(True)
    comp.write(w)
    data = w.getvalue()

    def fm(a):
        return b"FM \x04" + struct.pack("<i", a.shape[0]) + b"\x04" + struct.pack("<i", a.shape[1]) + \
            a.astype("<f4").tobytes()
    expected = (b"<ValueAvg> " + fm((value_sum / count).astype(np.float32))
                + b"<DerivAvg> " + fm((deriv_sum / count).astype(np.float32))
                + b"<SelfRepairConfig> ")
    assert expected in data
    assert data.endswith(b"<Count> \x08" + struct.pack("<d", 28.0) + b"</LstmNonlinearityComponent> ")
    text = KaldiWriter(False)
    comp.write(text)
    assert "<Count> 28 </LstmNonlinearityComponent> " in text.getvalue().decode()


def test_zero_stats_and_averaging_as_nnet3_average(nnet):
    m = NnetModule(nnet).train()
    flat = FlatParams(m.parameters(), training_statistics(m))   # statistics become views of flat.stats
    op = m.op("lstm1.lstm_nonlin")
    states, sums = [], []
    for n in (2, 3):  # two jobs on different data
        m.zero_stats()
        assert op.activation_stats()[2] == 0.0
        _train_step(m, torch.randn(n, 20, 4))
        sums.append(op.activation_stats())
        states.append(flat.stats.clone())
    # nnet3-average: sums and counts averaged alike, so the averages are pooled over the jobs.
    flat.stats.copy_((states[0] + states[1]) / 2)
    m.write_back()
    comp = nnet.components["lstm1.lstm_nonlin"]
    assert comp.count == pytest.approx((28 + 42) / 2)
    np.testing.assert_allclose(comp.deriv_avg, (sums[0][1] + sums[1][1]) / (28 + 42), rtol=1e-5)
    m.zero_stats()
    m.write_back()
    assert comp.count == 0.0 and comp.value_avg.shape == (5, 8) and not comp.deriv_avg.any()
    assert not comp.self_repair_prob.any()
