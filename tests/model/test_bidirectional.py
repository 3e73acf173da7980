"""Bidirectional recurrences: BLSTM and TDNN-BLSTM networks (backward layers with delay > 0,
IfDefined(Offset(x, +d))) computed as nnet3 computes them (docs/kaldi-formats.md 3.5, 5.7):
their model context, chunked computation with extra right context
(src/nnet3/nnet-am-decodable-simple.cc), batching, derivative times. The networks are the
families blstm, tdnn-blstm (families.BLSTM, families.TDNN_BLSTM) and spec-lstm-mirrored of
tests/model/families.py, which
test_contracts.py checks against the naive evaluator, in training (derivatives reach both
directions) and through export (as a final.mdl)."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.config import NetworkConfigError
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from .families import build, module_fixtures
from .networks import fast_lstmp_lines

# Model contexts of the bidirectional families.
CONTEXTS = {"blstm": (2, 2), "tdnn-blstm": (1, 5)}

case, nnet = module_fixtures(*sorted(CONTEXTS))


def _inputs(nnet: Nnet, T: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(T, 4)).astype(np.float32)
    ivector = rng.normal(size=5).astype(np.float32) if nnet.has_node("ivector") else None
    return feats, ivector


def test_recurrences_add_no_model_context(case, nnet):
    """Kaldi's ComputeSimpleNnetContext finds IfDefined always computable, so a BLSTM's context
    is that of its splicing and output delay in both directions (docs/kaldi-formats.md 3.6)."""
    assert model_context(nnet) == CONTEXTS[case]


def test_chunks_with_covering_context_equal_the_whole_utterance(nnet):
    """Two chunks whose extra contexts reach exactly the utterance's ends see the same input as
    one whole-utterance computation, so both directions give the same state."""
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


def test_batch_of_chunks_equals_one_at_a_time(nnet):
    m = NnetModule(nnet).eval()   # BatchNorm in training mode would mix the chunks
    ivectors = torch.randn(3, 5) if nnet.has_node("ivector") else None
    x = torch.randn(3, 30, 4)
    batched = m(x, left_context=10, num_frames=12, ivectors=ivectors)
    single = torch.cat([m(x[i:i + 1], left_context=10, num_frames=12,
                          ivectors=None if ivectors is None else ivectors[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_recurrence_reading_past_and_future_is_rejected():
    """One loop cannot be stepped in either direction if it reads both t-1 and t+1."""
    lines = ["input-node name=input dim=4"] + fast_lstmp_lines("L", "input", 4, 4, 2, 2, -1, 1.0)
    lines = [line.replace("IfDefined(Offset(L.c_trunc, -1))", "IfDefined(Offset(L.c_trunc, 1))") for line in lines]
    lines += ["output-node name=output input=L.rp"]
    with pytest.raises(NetworkConfigError, match="both past and future"):
        NnetModule(Nnet.from_config("\n".join(lines) + "\n"))


def test_deriv_times_bound_both_directions():
    """nnet3-train's min/max-deriv-time: no derivative reaches frames before min through the
    forward layers or after max through the backward ones, so with splicing of +-2 the input
    gets derivatives only on frames min-2 .. max+2 (train_rnn.py, --trainer.deriv-truncate-margin)."""
    m = NnetModule(build("blstm")).train()
    feats = torch.randn(2, 30, 4, requires_grad=True)   # frames -8 .. 21; outputs 0 .. 11

    def frames_with_derivatives(**deriv_times):
        feats.grad = None
        m(feats, left_context=8, num_frames=12, ivectors=torch.randn(2, 5), **deriv_times).sum().backward()
        return (feats.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten() - 8

    assert frames_with_derivatives().tolist() == list(range(-8, 22))
    assert frames_with_derivatives(min_deriv_time=-4, max_deriv_time=13).tolist() == list(range(-6, 16))
