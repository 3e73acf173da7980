"""Strided evaluation (model/graph.py, "Strides"): `forward_outputs(..., output_stride=s)` computes
the outputs at frames 0, s, 2s, ... and each node only at the frames Kaldi's computation graph
computes for that request. Its outputs and parameter gradients are those of the full computation
at those frames; BatchNorm's training statistics are over the frames Kaldi computes; a node that
cannot be strided falls back to stride 1."""
from collections import defaultdict

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import computable_ranges, model_context, node_input, reads_input
from kaldi_avg.kaldi.nnet3.descriptor import Const, NodeRef, Offset, ReplaceIndex, Round
from kaldi_avg.kaldi.nnet3.nnet import DimRangeNode, InputNode, Nnet
from kaldi_avg.model import graph
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.natural_gradient import NaturalGradientPass

from .families import FAMILIES
from .networks import randomized, with_batchnorm_stats

S = 3

# egs/fsdd/s5/local/chain/run_tdnn_lstm.sh's network, small: TDNN layers spliced (-1,0,1), fast-lstmp
# layers with delay -3 between TDNN layers spliced (-3,0,3), outputs 5 frames late.
CHAIN_TDNN_LSTM = """input dim=5 name=input
fixed-affine-layer name=lda input=Append(-1,0,1) affine-transform-file=unused.mat
relu-batchnorm-layer name=tdnn1 dim=12
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=12
relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=12
fast-lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-3 decay-time=20
relu-batchnorm-layer name=tdnn4 input=Append(-3,0,3) dim=12
relu-batchnorm-layer name=tdnn5 input=Append(-3,0,3) dim=12
fast-lstmp-layer name=lstm2 cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-3
output-layer name=output input=lstm2 include-log-softmax=false output-delay=5 dim=6
output-layer name=output-xent input=lstm2 output-delay=5 dim=6
"""

# tests/chain/experiment.py's network: the stride reaches down to tdnn2's Append(-3,0,3).
CHAIN_SMALL = """input dim=5 name=input
relu-renorm-layer name=tdnn1 input=Append(-1,0,1) dim=10
relu-renorm-layer name=tdnn2 input=Append(-3,0,3) dim=10
fast-lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-3
output-layer name=output input=lstm1 include-log-softmax=false dim=6
output-layer name=output-xent input=lstm1 dim=6
"""

# Append(-3,0,3) only in the upper layers.
TDNN_UPPER = """input dim=5 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-2,-1,0,1,2) dim=10
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,2) dim=10
relu-batchnorm-layer name=tdnn3 input=Append(-3,0,3) dim=10
relu-batchnorm-layer name=tdnn4 input=Append(-6,0,3) dim=10
output-layer name=output dim=6
"""

# The top layer reads (-1,0,1): every layer below it runs at stride 1.
TOP_SPLICE = """input dim=5 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-3,0,3) dim=10
relu-batchnorm-layer name=tdnn2 input=Append(-3,0,3) dim=10
relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=10
output-layer name=output dim=6
"""

# train_rnn.py's LSTM: the recurrence (delay -1) holds everything at stride 1.
XENT_LSTM = """input dim=5 name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2) affine-transform-file=unused.mat
fast-lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
fast-lstmp-layer name=lstm2 cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-2
output-layer name=output input=lstm2 output-delay=2 dim=6
"""

NETWORKS = {"chain-tdnn-lstm": CHAIN_TDNN_LSTM, "chain-small": CHAIN_SMALL, "tdnn-upper": TDNN_UPPER,
            "top-splice": TOP_SPLICE, "xent-lstm": XENT_LSTM}
_BUILT: dict[str, Nnet] = {}


def network(name: str) -> Nnet:
    if name not in _BUILT:
        nnet = build_nnet(NETWORKS[name], f"{name}.xconfig", which="ref")
        _BUILT[name] = with_batchnorm_stats(randomized(nnet, seed=4, scale=0.4))
    return _BUILT[name]


def outputs_of(nnet: Nnet) -> tuple[str, ...]:
    return tuple(n.name for n in nnet.output_nodes())


def inputs(nnet: Nnet, num_frames: int, extra_left: int = 4, seed: int = 0, N: int = 3):
    """(feats, left context, ivectors) for `num_frames` output frames with the model's context
    and `extra_left` more frames on the left (a loop then starts before the chunk)."""
    left, right = model_context(nnet)
    left += extra_left
    rng = np.random.default_rng(seed)
    dims = {n.name: n.dim for n in nnet.input_nodes()}
    feats = torch.from_numpy(rng.normal(size=(N, left + num_frames + right, dims["input"])).astype(np.float32))
    iv = torch.from_numpy(rng.normal(size=(N, dims["ivector"])).astype(np.float32)) if "ivector" in dims else None
    return feats, left, iv


def run(m: NnetModule, feats, left, iv, num_frames, stride, outputs, **kw):
    return m.forward_outputs(feats, left, num_frames, ivectors=iv, outputs=outputs, output_stride=stride, **kw)


def kaldi_frames(nnet: Nnet, outputs, out_frames, t0: int, t1: int) -> dict[str, set[int]]:
    """The frames of each node that Kaldi's computation graph computes for `outputs` at
    `out_frames` from input frames t0..t1: from the requested outputs, each (node, frame) adds
    the (node, frame) pairs its input reads, where they are computable (IfDefined reads that are
    not computable give zeros)."""
    comp = computable_ranges(nnet, t0, t1)

    def reads(d, t, out):
        if isinstance(d, NodeRef):
            out.append((d.name, t))
        elif isinstance(d, Offset):
            reads(d.arg, t + d.t, out)
        elif isinstance(d, Round):
            reads(d.arg, t // d.modulus * d.modulus, out)
        elif isinstance(d, ReplaceIndex):
            reads(d.arg, 0, out)
        elif not isinstance(d, Const):
            for c in d.children():
                reads(c, t, out)
        return out

    frames: dict[str, set[int]] = defaultdict(set)
    todo = [(o, t) for o in outputs for t in out_frames]
    while todo:
        name, t = todo.pop()
        if t in frames[name]:
            continue
        frames[name].add(t)
        node = nnet.node(name)
        if isinstance(node, InputNode) or not reads_input(nnet, node):
            continue
        deps = [(node.input_node, t)] if isinstance(node, DimRangeNode) else reads(node_input(nnet, node), t, [])
        todo += [(d, u) for d, u in deps if comp[d][0] <= u <= comp[d][1]]
    return frames


def captured_frames(monkeypatch) -> list:
    """Every forward's node values, as {node: frames computed}, appended to the returned list."""
    seen = []
    init = graph._Eval.__init__

    def spy(self, *args, **kw):
        init(self, *args, **kw)
        seen.append(self.vals)
    monkeypatch.setattr(graph._Eval, "__init__", spy)
    return seen


def frames_of(vals) -> dict[str, set[int]]:
    return {name: set(range(first, first + v.shape[1] * stride, stride))
            for name, (v, first, stride) in vals.items() if first != -graph.INF}


# -- outputs ------------------------------------------------------------------------------
CASES = [pytest.param(name, fuse, id=f"{name}-{'fused' if fuse else 'stepped'}")
         for name in NETWORKS for fuse in (True, False)]


@pytest.mark.parametrize("name, fuse", CASES)
@pytest.mark.parametrize("num_frames", [16, 17, 18])
def test_strided_outputs_are_every_sth_frame_of_the_full_computation(name, fuse, num_frames):
    nnet = network(name)
    m = NnetModule(nnet, fuse_lstm=fuse).eval()
    feats, left, iv = inputs(nnet, num_frames)
    outs = outputs_of(nnet)
    with torch.no_grad():
        full = run(m, feats, left, iv, num_frames, 1, outs)
        for s in (2, S):
            strided = run(m, feats, left, iv, num_frames, s, outs)
            for a, b in zip(strided, full):
                assert a.shape[1] == (num_frames - 1) // s + 1
                torch.testing.assert_close(a, b[:, ::s], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_network_family_at_stride_3(name):
    """The model tests' networks (statistics pooling, Round, attention, convolution, GRUs, BLSTMs,
    i-vectors, the recipes' chain networks): the strided outputs are the full computation's."""
    nnet = FAMILIES[name].build()
    m = NnetModule(nnet).eval().double()
    num_frames = 10
    feats, left, iv = inputs(nnet, num_frames, extra_left=0, N=2)
    feats, iv = feats.double(), None if iv is None else iv.double()
    with torch.no_grad():
        full = run(m, feats, left, iv, num_frames, 1, ("output",))[0]
        strided = run(m, feats, left, iv, num_frames, S, ("output",))[0]
    scale = max(1.0, float(full.abs().max()))
    torch.testing.assert_close(strided, full[:, ::S], rtol=0, atol=1e-9 * scale)


# -- which frames are computed ------------------------------------------------------------
@pytest.mark.parametrize("name", ["chain-tdnn-lstm", "chain-small", "tdnn-upper"])
@pytest.mark.parametrize("fuse", [True, False])
def test_each_node_is_computed_at_the_frames_kaldi_computes(name, fuse, monkeypatch):
    """Exactly those in the chain networks. tdnn-upper's tdnn2 reads tdnn1 at frames 0 and 2 mod
    3, which no coarser grid than every frame holds: tdnn1 and below compute frames 1 mod 3 too."""
    nnet = network(name)
    m = NnetModule(nnet, fuse_lstm=fuse).eval()
    num_frames = 18
    feats, left, iv = inputs(nnet, num_frames)
    seen = captured_frames(monkeypatch)
    with torch.no_grad():
        run(m, feats, left, iv, num_frames, S, outputs_of(nnet))
    want = kaldi_frames(nnet, outputs_of(nnet), range(0, num_frames, S), -left, feats.shape[1] - left - 1)
    got = frames_of(seen[0])
    assert got.keys() <= want.keys()
    for node, frames in got.items():
        if node == "input":
            continue
        if name == "tdnn-upper" and node.startswith(("tdnn1.", "input")):
            assert frames > want[node] and {t % S for t in want[node]} == {0, 2}, node
        else:
            assert frames == want[node], node


def test_the_chain_network_computes_a_third_of_the_rows_above_the_stride_point(monkeypatch):
    nnet = network("chain-tdnn-lstm")
    m = NnetModule(nnet, fuse_lstm=False).eval()
    num_frames = 28     # the last output frame, 27, is one of the stride's
    feats, left, iv = inputs(nnet, num_frames, extra_left=0)
    rows = defaultdict(int)
    hooks = [op.register_forward_hook(lambda op, args, y, key=key: rows.__setitem__(
        key, rows[key] + args[0].numel() // max(1, args[0].shape[-1]))) for key, op in m.ops.items()]
    counts = []
    for s in (1, S):
        rows.clear()
        with torch.no_grad():
            run(m, feats, left, iv, num_frames, s, outputs_of(nnet))
        counts.append(dict(rows))
    for h in hooks:
        h.remove()
    full, strided = counts
    N = feats.shape[0]
    # Below the first (-3,0,3) splice: every frame either way.
    for key in ("lda", "tdnn1:affine", "tdnn2:affine"):
        assert strided[key] == full[key]
    # tdnn3 feeds lstm1 at offset 0, so it runs on the stride; the nodes above too.
    for key in ("tdnn3:affine", "tdnn4:affine", "tdnn5:affine", "lstm1:lstm_nonlin", "lstm2:lstm_nonlin",
                "output:affine", "output-xent:affine"):
        assert 2.5 * strided[key] <= full[key] <= 3.5 * strided[key], (key, strided[key], full[key])
    assert strided["output:affine"] == N * ((num_frames - 1) // S + 1)
    assert sum(strided.values()) < 0.6 * sum(full.values())


def test_the_fused_lstm_loops_step_over_the_stride(monkeypatch):
    nnet = network("chain-tdnn-lstm")
    m = NnetModule(nnet).eval()
    feats, left, iv = inputs(nnet, 18)
    strides = []
    fused = graph._Eval.run_fast_lstm
    monkeypatch.setattr(graph._Eval, "run_fast_lstm",
                        lambda self, loop: strides.append(self.step(loop.fast.nonlin)) or fused(self, loop))
    with torch.no_grad():
        run(m, feats, left, iv, 18, S, outputs_of(nnet))
    assert strides == [S, S]


@pytest.mark.parametrize("name", ["top-splice", "xent-lstm"])
def test_what_cannot_be_strided_falls_back_to_stride_1(name):
    nnet = network(name)
    m = NnetModule(nnet)
    grids = m._grids(("output",), S)
    strided = {n for n, g in grids.items() if g is not None and g[1] == S}
    if name == "top-splice":     # only the top layer and the output run on the stride
        assert strided == {"output", "output.affine", "output.log-softmax", "tdnn3.affine", "tdnn3.relu",
                           "tdnn3.batchnorm"}
    else:                        # the output layer only: the LSTMs' delays 1 and 2 are not multiples of 3
        assert strided == {"output", "output.affine", "output.log-softmax"}
        assert grids["lstm2.lstm_nonlin"] == (0, 1) and grids["lstm1.W_all"] == (0, 1)


def test_a_recipes_chain_grids():
    """The chain TDNN-LSTM: the outputs are 5 frames late, so everything from lstm2 down to tdnn3
    runs on the frames 2 mod 3; tdnn2 and below on every frame."""
    grids = NnetModule(network("chain-tdnn-lstm"))._grids(("output", "output-xent"), S)
    for node in ("output.affine", "lstm2.W_all", "lstm2.lstm_nonlin", "lstm2.cr_trunc", "tdnn5.affine",
                 "tdnn4.batchnorm", "lstm1.rp", "tdnn3.affine", "tdnn3.batchnorm"):
        assert grids[node] == (2, 3), node
    for node in ("tdnn2.affine", "tdnn1.batchnorm", "lda", "input"):
        assert grids[node] == (0, 1), node


# -- gradients ----------------------------------------------------------------------------
def _gradients(m: NnetModule, feats, left, iv, num_frames, stride, weights, **kw):
    m.zero_grad(set_to_none=True)
    ys = run(m, feats, left, iv, num_frames, stride, tuple(weights), **kw)
    if stride == 1:
        ys = [y[:, ::S] for y in ys]
    sum((y * w).sum() for y, w in zip(ys, weights.values())).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, fuse", CASES)
@pytest.mark.parametrize("deriv_times", [False, True])
def test_gradients_through_the_strided_outputs_are_those_of_the_full_computation(name, fuse, deriv_times):
    """In training (BackpropTruncation's clipping and zeroing at each frame's time), BatchNorm on
    its stored statistics, plain gradients; with min/max deriv time (frames) or without."""
    nnet = network(name)
    m = NnetModule(nnet, fuse_lstm=fuse).train()
    m.set_natural_gradient(False)
    for op in m.batchnorm_ops():
        op.eval()
    num_frames = 17
    feats, left, iv = inputs(nnet, num_frames, seed=2)
    gen = torch.Generator().manual_seed(5)
    weights = {o: torch.randn(feats.shape[0], (num_frames - 1) // S + 1, nnet.output_dim(o), generator=gen)
               for o in outputs_of(nnet)}
    kw = dict(min_deriv_time=-4, max_deriv_time=num_frames - 6) if deriv_times else {}
    full = _gradients(m, feats, left, iv, num_frames, 1, weights, **kw)
    strided = _gradients(m, feats, left, iv, num_frames, S, weights, **kw)
    assert full.keys() == strided.keys() and len(full) > 4
    for n in full:
        torch.testing.assert_close(strided[n], full[n], rtol=1e-4, atol=1e-5, msg=n)


# -- statistics ---------------------------------------------------------------------------
@pytest.mark.parametrize("fuse", [True, False])
def test_batchnorm_statistics_are_over_the_frames_kaldi_computes(fuse):
    """tdnn4's BatchNorm (above the stride point) in training: its count, sum and sum of squares
    are those of its input at the frames Kaldi computes (the layers below on their stored
    statistics, so that its input at a frame does not depend on which frames are computed)."""
    nnet = network("chain-tdnn-lstm")
    m = NnetModule(nnet, fuse_lstm=fuse).eval()
    num_frames = 24
    feats, left, iv = inputs(nnet, num_frames)
    outs = outputs_of(nnet)
    bn = m.op("tdnn4.batchnorm")
    captured = {}
    hook = bn.register_forward_hook(lambda op, args, y: captured.__setitem__("x", args[0]))
    with torch.no_grad():
        run(m, feats, left, iv, num_frames, 1, outs)
    hook.remove()
    full_in = captured["x"]                              # frames computable..num_frames-1+..., stride 1
    first = NnetModule(nnet)._need(-left, feats.shape[1] - left - 1, num_frames, outs)[0]["tdnn4.batchnorm"][0]
    frames = sorted(kaldi_frames(nnet, outs, range(0, num_frames, S), -left,
                                 feats.shape[1] - left - 1)["tdnn4.batchnorm"])
    rows = full_in[:, [t - first for t in frames]].reshape(-1, full_in.shape[-1]).double()
    bn.train()
    bn.zero_stats()
    with torch.no_grad():
        run(m, feats, left, iv, num_frames, S, outs)
    assert float(bn.stats_count) == rows.shape[0] == feats.shape[0] * len(frames)
    torch.testing.assert_close(bn.stats_sum, rows.sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(bn.stats_sumsq, (rows * rows).sum(0), rtol=1e-5, atol=1e-4)


def test_natural_gradient_rows_of_a_strided_use_are_those_within_the_deriv_times():
    x = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)   # frames -7, -4, ..., 8
    y = (x * 1.0).requires_grad_()
    ng = NaturalGradientPass(None, min_deriv_time=-5, max_deriv_time=6)
    ng.record(x, y, first_frame=-7, stride=3)
    assert ng.inputs[0].reshape(2, -1).tolist() == x[:, 1:5, 0].tolist()     # frames -4, -1, 2, 5
    y.sum().backward()
    assert ng.derivs[0].shape == (8, 1)


def test_the_fixed_node_cache_keeps_each_stride_apart():
    nnet = network("chain-tdnn-lstm")
    m = NnetModule(nnet).eval()
    num_frames = 18
    feats, left, iv = inputs(nnet, num_frames)
    cache = {}
    with torch.no_grad():
        a = run(m, feats, left, iv, num_frames, S, ("output",), cache=cache)[0]
        b = run(m, feats, left, iv, num_frames, 1, ("output",), cache=cache)[0]
        c = run(m, feats, left, iv, num_frames, S, ("output",), cache=cache)[0]
    assert torch.equal(a, c)
    torch.testing.assert_close(a, b[:, ::S], rtol=0, atol=1e-5)
