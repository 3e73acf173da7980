"""Frame subsampling and empty priors in `kaldi-avg compute`, as nnet3-compute does them for chain
models (docs/kaldi-formats.md 3.4-3.5, 7.1; Kaldi's DecodableNnetSimple): output rows at frames
0, f, 2f, ... (ceil(T / f) of them), --frames-per-chunk rounded up to a multiple of lcm(f, the
network's modulus), each chunk's online i-vector row from its middle output frame, and
--use-priors=true on a final.mdl with an empty priors vector subtracting nothing.

The networks are chain-like: an `output` without log-softmax and an `output-xent` beside it, as
Kaldi's chain xconfigs write them (egs/mini_librispeech/s5/local/chain/tuning/run_tdnn_1a.sh)."""
import dataclasses

import numpy as np
import pytest

from kaldi_avg.cli import main
from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.descriptor import to_string
from kaldi_avg.kaldi.tables import read_matrix_table, write_matrix_table
from kaldi_avg.kaldi.transition import TransitionModel
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import (
    ChunkOptions,
    compute_utterance,
    online_ivector_row,
    plan_chunks,
    rounded_frames_per_chunk,
)
from kaldi_avg.model.graph import NnetModule

from .networks import randomized

# A TDNN chain network in the layout of Kaldi's chain recipes (chain and xent branches).
CHAIN_XCONFIG = """input dim=13 name=input
relu-renorm-layer name=tdnn1 input=Append(-1,0,1) dim=48
relu-renorm-layer name=tdnn2 input=Append(-3,0,3) dim=48
relu-renorm-layer name=prefinal-chain input=tdnn2 dim=48 target-rms=0.5
output-layer name=output include-log-softmax=false dim=NUM_PDFS max-change=1.5
relu-renorm-layer name=prefinal-xent input=tdnn2 dim=48 target-rms=0.5
output-layer name=output-xent dim=NUM_PDFS learning-rate-factor=5.0 max-change=1.5
"""
# A TDNN-LSTM one (the recurrence steps 3 frames, as chain TDNN-LSTMs' delay=-3).
CHAIN_LSTM_XCONFIG = """input dim=13 name=input
relu-renorm-layer name=tdnn1 input=Append(-1,0,1) dim=32
fast-lstmp-layer name=lstm1 cell-dim=16 recurrent-projection-dim=8 non-recurrent-projection-dim=8 delay=-3
relu-renorm-layer name=tdnn2 input=Append(-3,0,3) dim=32
output-layer name=output include-log-softmax=false dim=NUM_PDFS max-change=1.5 output-delay=1
output-layer name=output-xent input=tdnn2 dim=NUM_PDFS max-change=1.5
"""


def chain_network(num_pdfs: int, seed: int = 0, xconfig: str = CHAIN_XCONFIG, scale: float = 0.3):
    """Random values everywhere (the xconfig's output layers start at zero)."""
    return randomized(build_nnet(xconfig, "chain.xconfig", num_pdfs=num_pdfs, seed=seed), seed, scale=scale)


def test_chain_network_has_a_raw_output_and_an_xent_output():
    nnet = chain_network(7)
    assert to_string(nnet.node("output").input) == "output.affine"
    assert "output.log-softmax" not in nnet.components and "output-xent.log-softmax" in nnet.components
    assert nnet.output_dim("output") == nnet.output_dim("output-xent") == 7


@pytest.mark.parametrize("frames, fpc, f, modulus, want", [
    # (first output frame, rows): Kaldi's chunks, rounded frames_per_chunk / f rows each
    (10, 5, 3, 1, [(0, 2), (6, 2)]),                  # 5 -> 6: frames 0, 3 | 6, 9
    (7, 50, 3, 1, [(0, 3)]),                          # 50 -> 51: frames 0, 3, 6 (ceil(7 / 3) rows)
    (9, 3, 3, 1, [(0, 1), (3, 1), (6, 1)]),
    (30, 7, 3, 2, [(0, 4), (12, 4), (24, 2)]),        # lcm(3, 2) = 6: 7 -> 12
    (10, 5, 1, 1, [(0, 5), (5, 5)]),                  # f = 1, modulus 1: unchanged
    (10, 5, 1, 2, [(0, 6), (6, 4)]),                  # f = 1, modulus 2: 5 -> 6, as Kaldi
])
def test_chunks_follow_ensure_frame_is_computed(frames, fpc, f, modulus, want):
    opts = ChunkOptions(frames_per_chunk=fpc, frame_subsampling_factor=f)
    chunks = plan_chunks(frames, 2, 4, opts, modulus)
    assert [(c.first, c.num) for c in chunks] == want
    assert all(c.step == f and c.span == (c.num - 1) * f + 1 and (c.left, c.right) == (2, 4) for c in chunks)
    assert rounded_frames_per_chunk(opts, modulus) % int(np.lcm(f, modulus)) == 0


def test_extra_contexts_of_first_and_last_subsampled_chunks():
    opts = ChunkOptions(frames_per_chunk=6, extra_left_context=5, extra_right_context=2,
                        extra_left_context_initial=0, extra_right_context_final=1, frame_subsampling_factor=3)
    chunks = plan_chunks(17, 3, 4, opts)   # rows 0..5 at frames 0..15: chunks 0,3 | 6,9 | 12,15
    assert [(c.first, c.num, c.left, c.right) for c in chunks] == [(0, 2, 3, 6), (6, 2, 8, 6), (12, 2, 8, 5)]


def test_online_ivector_row_of_a_subsampled_chunk():
    """GetCurrentIvector(first_output_frame, last_output_frame - first_output_frame): the middle
    of the chunk's output frames at the input frame rate."""
    assert online_ivector_row("u", 6, 2, 10, 5, step=3) == 1     # 6 + 3 // 2 = 7 -> row 1
    assert online_ivector_row("u", 0, 4, 10, 5, step=3) == 0     # 0 + 9 // 2 = 4 -> row 0
    assert online_ivector_row("u", 0, 4, 10, 4, step=3) == 1     # frame 4, period 4
    assert online_ivector_row("u", 0, 4, 10, 4) == 0             # step 1: frame 1


@pytest.mark.parametrize("name, xconfig", [("tdnn", CHAIN_XCONFIG), ("tdnn-lstm", CHAIN_LSTM_XCONFIG)])
def test_subsampled_rows_are_every_third_full_rate_row(name, xconfig):
    """For chunks that start where the full-rate ones start (frames_per_chunk a multiple of 3), the
    output at frames 0, 3, 6, ... is the full-rate output's every third row, feed-forward or
    recurrent (a node's value does not depend on which other frames are requested)."""
    nnet = chain_network(11, seed=1, xconfig=xconfig)
    module, context = NnetModule(nnet), model_context(nnet)
    rng = np.random.default_rng(0)
    for frames in (1, 2, 3, 29, 31, 61):
        feats = rng.normal(size=(frames, 13)).astype(np.float32)
        for opts in (ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=12, extra_left_context=6)):
            full = compute_utterance(module, feats, opts, context)
            sub = compute_utterance(module, feats, dataclasses.replace(opts, frame_subsampling_factor=3), context)
            assert sub.shape == (-(-frames // 3), 11)
            np.testing.assert_allclose(sub, full[::3], rtol=0, atol=2e-5, err_msg=f"{name}, {frames} frames")
    # and something was computed: the rows differ from frame to frame
    assert np.abs(np.diff(sub, axis=0)).max() > 0.1


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """chain.mdl: the chain network with a transition model of its pdf count and EMPTY priors (as
    nnet3-am-init writes a chain model); chain.raw: the network alone; features of 3 utterances."""
    monkeypatch.chdir(tmp_path)
    nnet = chain_network(6, seed=2)
    Nnet3Model(nnet, chain_transition_model(6), None).write("chain.mdl")
    Nnet3Model(nnet).write("chain.raw")
    assert "prior-dimension: 0\n" in read_nnet3_file("chain.mdl").info()
    rng = np.random.default_rng(3)
    feats = {k: rng.normal(size=(n, 13)).astype(np.float32) for k, n in {"a": 95, "b": 43, "c": 7}.items()}
    write_matrix_table("ark,scp:feats.ark,feats.scp", sorted(feats.items()))
    return nnet, feats


def chain_transition_model(num_pdfs: int) -> TransitionModel:
    """A chain transition model with `num_pdfs` pdfs: the chain topology (2 pdf classes per phone)
    on a monophone tree of num_pdfs / 2 phones."""
    from kaldi_avg.chain.topology import monophone_chain_tree
    _, tm = monophone_chain_tree(list(range(2, num_pdfs // 2 + 1)), [1])
    assert tm.num_pdfs == num_pdfs
    return tm


def compute(*args):
    return main(["compute", *args])


def test_cli_frame_subsampling_gives_every_third_row(workdir, capsys):
    nnet, feats = workdir
    assert compute("--frames-per-chunk=50", "chain.raw", "scp:feats.scp", "ark:full.ark") == 0
    assert compute("--frame-subsampling-factor", "3", "--frames-per-chunk", "50", "chain.raw", "scp:feats.scp",
                   "ark:sub.ark") == 0
    err = capsys.readouterr().err
    # as DecodableNnetSimple::CheckAndFixConfigs logs it (once)
    assert err.count("Increasing --frames-per-chunk from 50 to 51 to make it a multiple of "
                     "--frame-subsampling-factor=3") == 1
    full, sub = dict(read_matrix_table("ark:full.ark")), dict(read_matrix_table("ark:sub.ark"))
    for k, x in feats.items():
        assert full[k].shape == (len(x), 6) and sub[k].shape == (-(-len(x) // 3), 6)
        np.testing.assert_allclose(sub[k], full[k][::3], rtol=0, atol=2e-5)


def test_cli_use_priors_with_empty_priors_subtracts_nothing(workdir, capsys):
    """nnet3-compute --use-priors=true reads the .mdl's priors; a chain model's are empty and
    DecodableNnetSimple subtracts only a non-empty vector: the raw network output."""
    assert compute("--frame-subsampling-factor=3", "--use-priors=true", "chain.mdl", "scp:feats.scp",
                   "ark:with.ark") == 0
    assert compute("--frame-subsampling-factor=3", "chain.raw", "scp:feats.scp", "ark:without.ark") == 0
    got, want = dict(read_matrix_table("ark:with.ark")), dict(read_matrix_table("ark:without.ark"))
    assert sorted(got) == ["a", "b", "c"]
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])
    capsys.readouterr()
    # a raw nnet has no priors to use: nnet3-compute fails reading its transition model
    assert compute("--use-priors=true", "chain.raw", "scp:feats.scp", "ark:x.ark") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chain.raw: --use-priors=true needs an acoustic model" in err


def test_cli_rejects_a_zero_subsampling_factor(workdir, capsys):
    assert compute("--frame-subsampling-factor=0", "chain.raw", "scp:feats.scp", "ark:x.ark") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--frame-subsampling-factor and --frames-per-chunk must be > 0" in err
