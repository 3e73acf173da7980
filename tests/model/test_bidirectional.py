"""Bidirectional recurrences: BLSTM and TDNN-BLSTM networks (backward layers with delay > 0,
IfDefined(Offset(x, +d))) computed as nnet3 computes them (docs/kaldi-formats.md 3.5, 5.7),
checked against the naive evaluator; chunked computation with extra right context
(src/nnet3/nnet-am-decodable-simple.cc); export round trips; training runs."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes
from kaldi_avg.kaldi.nnet3.config import ConfigError
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from .networks import executor_and_reference, fast_lstmp_lines, randomized, spec_5_10_config

LSTM_DIMS = "cell-dim=8 recurrent-projection-dim=3 non-recurrent-projection-dim=2"

# egs/aspire/s5/local/nnet3/run_blstm.sh, small: forward and backward layers of each level read
# the Append of the level below.
BLSTM = f"""input dim=5 name=ivector
input dim=4 name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2,ReplaceIndex(ivector, t, 0)) affine-transform-file=unused.mat
fast-lstmp-layer name=blstm1-forward input=lda delay=-1 {LSTM_DIMS}
fast-lstmp-layer name=blstm1-backward input=lda delay=1 {LSTM_DIMS}
fast-lstmp-layer name=blstm2-forward input=Append(blstm1-forward, blstm1-backward) delay=-2 decay-time=20 {LSTM_DIMS}
fast-lstmp-layer name=blstm2-backward input=Append(blstm1-forward, blstm1-backward) delay=2 decay-time=20 {LSTM_DIMS}
output-layer name=output input=Append(blstm2-forward, blstm2-backward) output-delay=0 dim=7
"""

# egs/swbd/s5c/local/chain/tuning/run_tdnn_blstm_1a.sh, small: TDNN layers, then BLSTM levels
# with delay 3 joined by Append, a TDNN layer between them, and an output delay.
TDNN_BLSTM = f"""input dim=4 name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2) affine-transform-file=unused.mat
relu-batchnorm-layer name=tdnn1 dim=10
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=10
fast-lstmp-layer name=blstm1-forward input=tdnn2 delay=-3 {LSTM_DIMS}
fast-lstmp-layer name=blstm1-backward input=tdnn2 delay=3 {LSTM_DIMS}
relu-batchnorm-layer name=tdnn3 input=Append(blstm1-forward, blstm1-backward) dim=10
fast-lstm-layer name=blstm2-forward input=tdnn3 cell-dim=6 delay=-3
fast-lstm-layer name=blstm2-backward input=tdnn3 cell-dim=6 delay=3
output-layer name=output input=Append(blstm2-forward, blstm2-backward) output-delay=2 dim=7
"""

NETWORKS = {"blstm": (BLSTM, (2, 2)), "tdnn-blstm": (TDNN_BLSTM, (1, 5))}


def _with_batchnorm_stats(nnet: Nnet, rng) -> Nnet:
    """Test-mode BatchNorm needs statistics; random ones so it is not the identity."""
    for comp in nnet.components.values():
        if comp.type_name == "BatchNormComponent":
            comp.set_stats(100.0, rng.normal(0, 1, comp.block_dim), rng.uniform(0.5, 2, comp.block_dim))
    return nnet


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    xconfig, context = NETWORKS[request.param]
    nnet = randomized(build_nnet(xconfig, f"{request.param}.xconfig", which="ref"), seed=5)
    return _with_batchnorm_stats(nnet, np.random.default_rng(6)), context


def _inputs(nnet: Nnet, T: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(T, 4)).astype(np.float32)
    ivector = rng.normal(size=5).astype(np.float32) if nnet.has_node("ivector") else None
    return feats, ivector


def _max_diff(nnet: Nnet, T: int, opts: ChunkOptions) -> float:
    feats, ivector = _inputs(nnet, T)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    return float(np.abs(got - want).max())


def test_recurrences_add_no_model_context(network):
    """Kaldi's ComputeSimpleNnetContext finds IfDefined always computable, so a BLSTM's context
    is that of its splicing and output delay in both directions (docs/kaldi-formats.md 3.6)."""
    nnet, context = network
    assert model_context(nnet) == context


@pytest.mark.parametrize("opts", [
    ChunkOptions(frames_per_chunk=1000),
    ChunkOptions(frames_per_chunk=6, extra_left_context=4, extra_right_context=5),
    ChunkOptions(frames_per_chunk=7, extra_left_context=3, extra_right_context=4,
                 extra_left_context_initial=0, extra_right_context_final=0),
], ids=["whole", "extra-right", "initial-final"])
def test_forward_equals_reference(network, opts):
    assert _max_diff(network[0], 23, opts) < 1e-5


def test_chunks_with_covering_context_equal_the_whole_utterance(network):
    """Two chunks whose extra contexts reach exactly the utterance's ends see the same input as
    one whole-utterance computation, so both directions give the same state."""
    nnet, _ = network
    feats, ivector = _inputs(nnet, 20)
    module, context = NnetModule(nnet), model_context(nnet)
    whole = compute_utterance(module, feats, ChunkOptions(frames_per_chunk=1000), context, ivector=ivector)
    covering = ChunkOptions(frames_per_chunk=10, extra_left_context=10, extra_right_context=10,
                            extra_left_context_initial=0, extra_right_context_final=0)
    chunked = compute_utterance(module, feats, covering, context, ivector=ivector)
    assert np.abs(chunked - whole).max() < 1e-5
    # Without the right context, the first chunk's backward layers start at its own end.
    short = ChunkOptions(frames_per_chunk=10, extra_left_context=10, extra_left_context_initial=0)
    assert np.abs(compute_utterance(module, feats, short, context, ivector=ivector)[:10] - whole[:10]).max() > 1e-3


def test_batch_of_chunks_equals_one_at_a_time(network):
    nnet, _ = network
    m = NnetModule(nnet).eval()   # BatchNorm in training mode would mix the chunks
    ivectors = torch.randn(3, 5) if nnet.has_node("ivector") else None
    x = torch.randn(3, 30, 4)
    batched = m(x, left_context=10, num_frames=12, ivectors=ivectors)
    single = torch.cat([m(x[i:i + 1], left_context=10, num_frames=12,
                          ivectors=None if ivectors is None else ivectors[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_forward_and_backward_pass_reach_both_directions(network):
    nnet, _ = network
    m = NnetModule(nnet)
    m.train()
    ivectors = torch.randn(2, 5) if nnet.has_node("ivector") else None
    out = m(torch.randn(2, 30, 4), left_context=8, num_frames=12, ivectors=ivectors, min_deriv_time=-4)
    out[..., 0].sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for direction in ("forward", "backward"):
        w_all = [g for n, g in grads.items() if f"-{direction}:W_all" in n]
        assert w_all and all(g.abs().sum() > 0 for g in w_all)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(network, binary):
    experiment = pytest.importorskip("tests.train.experiment")
    nnet, _ = network
    tm = experiment.transition_model()
    xconfig = NETWORKS["blstm" if nnet.has_node("ivector") else "tdnn-blstm"][0]
    am = randomized(build_nnet(xconfig.replace("dim=7", f"dim={tm.num_pdfs}"), "am.xconfig", which="ref"))
    priors = np.random.default_rng(8).uniform(1, 2, tm.num_pdfs).astype(np.float32)
    model = Nnet3Model(am, tm, priors / priors.sum())
    data = model.to_bytes(binary)
    again = read_nnet3_bytes(data, "final.mdl")
    assert again.to_bytes(binary) == data
    assert again.to_bytes(True) == model.to_bytes(True)
    feats, ivector = _inputs(am, 15)
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=4, extra_right_context=4)
    before = compute_utterance(NnetModule(am), feats, opts, model_context(am), ivector=ivector)
    after = compute_utterance(NnetModule(again.nnet), feats, opts, model_context(am), ivector=ivector)
    assert np.array_equal(before, after)


def test_recurrence_reading_past_and_future_is_rejected():
    """One loop cannot be stepped in either direction if it reads both t-1 and t+1."""
    lines = ["input-node name=input dim=4"] + fast_lstmp_lines("L", "input", 4, 4, 2, 2, -1, 1.0)
    lines = [line.replace("IfDefined(Offset(L.c_trunc, -1))", "IfDefined(Offset(L.c_trunc, 1))") for line in lines]
    lines += ["output-node name=output input=L.rp"]
    with pytest.raises(ConfigError, match="both past and future"):
        NnetModule(Nnet.from_config("\n".join(lines) + "\n"))


def test_spec_network_mirrored_in_time_equals_reference():
    """The docs/kaldi-formats.md 5.10 network with every recurrence delay negated: backward
    fast-lstmp and fast-lstm layers with delays 1 and 2 and decay scale."""
    text = spec_5_10_config().replace("Offset(lstm1.r_trunc, -1)", "Offset(lstm1.r_trunc, 1)") \
        .replace("Offset(lstm1.c_trunc, -1)", "Offset(lstm1.c_trunc, 1)") \
        .replace("Offset(lstm2.m_trunc, -2)", "Offset(lstm2.m_trunc, 2)") \
        .replace("Offset(lstm2.c_trunc, -2)", "Offset(lstm2.c_trunc, 2)")
    nnet = randomized(Nnet.from_config(text))
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=2, extra_right_context=6, extra_right_context_final=0)
    assert _max_diff(nnet, 23, opts) < 1e-5


def test_deriv_times_bound_both_directions():
    """nnet3-train's min/max-deriv-time: no derivative reaches frames before min through the
    forward layers or after max through the backward ones, so with splicing of +-2 the input
    gets derivatives only on frames min-2 .. max+2 (train_rnn.py, --trainer.deriv-truncate-margin)."""
    nnet = randomized(build_nnet(BLSTM, "blstm.xconfig", which="ref"), seed=5)
    m = NnetModule(nnet).train()
    feats = torch.randn(2, 30, 4, requires_grad=True)   # frames -8 .. 21; outputs 0 .. 11

    def frames_with_derivatives(**deriv_times):
        feats.grad = None
        m(feats, left_context=8, num_frames=12, ivectors=torch.randn(2, 5), **deriv_times).sum().backward()
        return (feats.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten() - 8

    assert frames_with_derivatives().tolist() == list(range(-8, 22))
    assert frames_with_derivatives(min_deriv_time=-4, max_deriv_time=13).tolist() == list(range(-6, 16))
