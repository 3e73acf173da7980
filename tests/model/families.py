"""The network families of the model tests: name -> how the network is built (xconfig or config
text, build options, random parameters and BatchNorm statistics) and what each shared contract of
test_contracts.py needs for it (utterance frames, chunkings, tolerances, the training chunk, the
export). The family test files (test_gru.py, test_cnn.py, ...) build the same networks with
`build` or `module_fixtures` for their family-specific tests."""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions

from .networks import randomized, spec_5_10_config, with_batchnorm_stats

XCONFIGS = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig")

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
output-layer name=output input=Append(blstm2-forward, blstm2-backward) output-delay=0 dim=NUM_PDFS
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
output-layer name=output input=Append(blstm2-forward, blstm2-backward) output-delay=2 dim=NUM_PDFS
"""

# ivector via ReplaceIndex, relu-batchnorm (test mode), lstmp-layer's separate components.
LAYER_ZOO = """input dim=5 name=ivector
input dim=4 name=input
fixed-affine-layer name=lda input=Append(-1,0,1,ReplaceIndex(ivector, t, 0)) affine-transform-file=unused.mat
relu-batchnorm-layer name=tdnn1 dim=12
lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=3 non-recurrent-projection-dim=2 delay=-1 decay-time=10
fast-lstm-layer name=lstm2 cell-dim=6 delay=-2
output-layer name=output output-delay=3 dim=7
"""

# Statistics pooling: mean+count and mean+stddev+count with periods; the Round(tdnn1, 3) read 2
# frames ahead makes the right context depend on the frame's phase modulo 3 (network modulus 6).
STATS_COUNTS = """input dim=4 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=6
stats-layer name=mean-count config=mean+count(-6:3:6:12)
stats-layer name=all config=mean+stddev+count(-4:2:2:4) input=tdnn1
relu-batchnorm-layer name=tdnn2 input=Append(tdnn1@-2, Offset(Round(tdnn1, 3), 2), mean-count, all) dim=6
output-layer name=output dim=3
"""


def spec_mirrored_config() -> str:
    """The docs/kaldi-formats.md 5.10 network with every recurrence delay negated: backward
    fast-lstmp and fast-lstm layers with delays 1 and 2 and decay scale."""
    return spec_5_10_config().replace("Offset(lstm1.r_trunc, -1)", "Offset(lstm1.r_trunc, 1)") \
        .replace("Offset(lstm1.c_trunc, -1)", "Offset(lstm1.c_trunc, 1)") \
        .replace("Offset(lstm2.m_trunc, -2)", "Offset(lstm2.m_trunc, 2)") \
        .replace("Offset(lstm2.c_trunc, -2)", "Offset(lstm2.c_trunc, 2)")


def xconfig_fixture(case: str) -> str:
    with open(os.path.join(XCONFIGS, case, "network.xconfig")) as f:
        return f.read()


@dataclass(frozen=True)
class Window:
    """An executor check in float64 of one output node over one window (`left` frames of context
    given, `frames` outputs) against ReferenceNnet3 directly: statistics pooling, where in float32
    (as in Kaldi) mean(x^2) - mean^2 loses digits where a window's values are nearly equal."""
    output: str
    left: int
    frames: int


@dataclass(frozen=True)
class Training:
    """The forward and backward contract's chunk and checks: two sequences of `width` input
    frames (default: the model's context around `frames`), `left` of them left context (default:
    the model's); every parameter gradient exists and is finite, and with `nonzero` is nonzero,
    except those whose names contain one of `exempt`; the parameters whose names contain each of
    `reaches` exist and all get nonzero gradients."""
    frames: int
    left: int | None = None
    width: int | None = None
    loss: str = "sum"   # sum: out.sum(); first: out[..., 0].sum(); square: out.pow(2).sum(); random: (out * randn).sum()
    min_deriv_time: int | None = None
    nonzero: bool = False
    exempt: tuple[str, ...] = ()
    reaches: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    name: str
    text: str                        # xconfig text (config lines where `config`)
    config: bool = False             # `text` is config lines for Nnet.from_config
    which: str = "ref"               # build_nnet's config
    lda: tuple[int, int] | None = None   # a random lda.mat (rows, cols) for the fixed-affine layer
    num_pdfs: int | None = None      # NUM_PDFS in the xconfig
    seed: int = 0                    # randomized()
    scale: float = 0.5
    batchnorm: tuple[int, float] | None = (6, 50.0)   # with_batchnorm_stats(seed, count)
    # executor vs naive evaluator: utterance frames, input seed, chunkings (or float64 windows)
    frames: int = 23
    input_seed: int = 7
    runs: tuple[ChunkOptions | Window, ...] = (ChunkOptions(frames_per_chunk=1000),)
    tol: float = 1e-5
    relative: bool = False           # tol times max(1, max |reference|)
    peak: float | None = None        # max |reference| must exceed it (the check is not vacuous)
    training: Training = field(default_factory=lambda: Training(frames=10))
    # export: utterance frames, chunking (None: one test-mode forward over the window), formats
    export_frames: int = 12
    export_opts: ChunkOptions | None = ChunkOptions(frames_per_chunk=5, extra_left_context=2)
    export_binary: tuple[bool, ...] = (True, False)
    acoustic_model: bool = False     # exported as final.mdl with a transition model and priors

    def build(self, num_pdfs: int | None = None) -> Nnet:
        """A fresh network (layer-written and lda matrices in a temporary directory)."""
        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
            if self.config:
                nnet = Nnet.from_config(self.text)
            else:
                lda = None
                if self.lda is not None:
                    lda = os.path.join(tmp, "lda.mat")
                    rows = np.random.default_rng(3).normal(0, 0.5, self.lda)
                    with open(lda, "w") as f:
                        f.write("[ " + "\n".join(" ".join(map(str, r)) for r in rows) + " ]")
                nnet = build_nnet(self.text, f"{self.name}.xconfig", num_pdfs=num_pdfs or self.num_pdfs,
                                  lda_mat=lda, which=self.which)
        randomized(nnet, seed=self.seed, scale=self.scale)
        if self.batchnorm is not None:
            with_batchnorm_stats(nnet, *self.batchnorm)
        return nnet


_FAMILIES = [
    Family("spec-lstm", spec_5_10_config(), config=True, batchnorm=None, input_seed=1,
           runs=(ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=5, extra_left_context=3),
                 ChunkOptions(frames_per_chunk=7, extra_left_context=4, extra_left_context_initial=0)),
           training=Training(frames=10, left=4, width=20, loss="first", min_deriv_time=-2)),
    Family("spec-lstm-mirrored", spec_mirrored_config(), config=True, batchnorm=None,
           runs=(ChunkOptions(frames_per_chunk=5, extra_left_context=2, extra_right_context=6,
                              extra_right_context_final=0),),
           training=Training(frames=10, loss="first")),
    Family("layer-zoo", LAYER_ZOO, seed=3, batchnorm=(4, 100.0), frames=19,
           runs=(ChunkOptions(frames_per_chunk=6, extra_left_context=2),),
           training=Training(frames=10, loss="first")),
    *(Family(name, text, num_pdfs=7, seed=5, batchnorm=(6, 100.0), acoustic_model=True, export_frames=15,
             runs=(ChunkOptions(frames_per_chunk=1000),
                   ChunkOptions(frames_per_chunk=6, extra_left_context=4, extra_right_context=5),
                   ChunkOptions(frames_per_chunk=7, extra_left_context=3, extra_right_context=4,
                                extra_left_context_initial=0, extra_right_context_final=0)),
             training=Training(frames=12, left=8, width=30, loss="first", min_deriv_time=-4,
                               reaches=("-forward:W_all", "-backward:W_all")),
             export_opts=ChunkOptions(frames_per_chunk=5, extra_left_context=4, extra_right_context=4))
      for name, text in (("blstm", BLSTM), ("tdnn-blstm", TDNN_BLSTM))),
    *(Family(case, xconfig_fixture(case), scale=0.4, seed=5,
             runs=(ChunkOptions(frames_per_chunk=1000),
                   ChunkOptions(frames_per_chunk=7, extra_left_context=4, extra_right_context=3)),
             training=Training(frames=16, nonzero=True, exempt=("xent",), reaches=("gru_nonlin",)))
      for case in ("small_tdnn_opgru", "small_gru_lstmb")),
    Family("small_cnn", xconfig_fixture("small_cnn"), which="final", scale=0.3, seed=5, export_frames=15,
           runs=(ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=7, extra_left_context=3),
                 ChunkOptions(frames_per_chunk=4, extra_left_context=2, extra_right_context=1)),
           tol=1e-4, relative=True, peak=1e-2,
           training=Training(frames=20, loss="square")),
    Family("small_attention", xconfig_fixture("small_attention"), which="final", lda=(21, 22), scale=0.3,
           seed=5, frames=19,
           runs=(ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=5),
                 ChunkOptions(frames_per_chunk=6, extra_left_context=4, extra_right_context=2)),
           training=Training(frames=20)),
    *(Family(case, text, scale=0.3, seed=5, frames=40, tol=1e-6, runs=runs,
             training=Training(frames=16, loss="random", nonzero=True, exempt=("sad",)),
             export_frames=30, export_opts=None)
      for case, text, runs in (("small_xvector", xconfig_fixture("small_xvector"),
                                (Window("output", 3, 20), Window("output-sad", 9, 20))),
                               ("stats-counts", STATS_COUNTS, (Window("output", 5, 20),)))),
    Family("small_frontend", xconfig_fixture("small_frontend"), which="final", lda=(16, 17), scale=0.2,
           seed=5, frames=17,
           runs=(ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=6, extra_left_context=3)),
           training=Training(frames=20)),
    Family("small_tdnnf", xconfig_fixture("small_tdnnf"), scale=0.2, seed=5, frames=21,
           runs=(ChunkOptions(frames_per_chunk=1000), ChunkOptions(frames_per_chunk=6, extra_left_context=3)),
           training=Training(frames=15, left=10, width=30, nonzero=True, exempt=("xent",))),
]

# Real Kaldi recipe networks at their recipes' own sizes (test_recipe_networks.py says which
# scripts); every parameter random and small.
RECIPES = ["tedlium_nnet3_tdnn_lstm_1a", "mini_librispeech_nnet3_tdnn_lstm_1c", "swbd_chain_lstm_6j",
           "swbd_chain_blstm_6j", "swbd_chain_tdnn_lstm_1e", "aspire_nnet3_tdnn", "wsj_chain_tdnn_1g",
           "mini_librispeech_chain_cnn_tdnn_1a"]
_FAMILIES += [Family(case, xconfig_fixture(case), seed=3, scale=0.03, batchnorm=(4, 50.0), frames=8,
                     runs=(ChunkOptions(frames_per_chunk=8),), tol=1e-4, relative=True, peak=1e-3,
                     training=Training(frames=8, exempt=("xent",)),
                     export_frames=6, export_opts=ChunkOptions(frames_per_chunk=6), export_binary=(True,))
              for case in RECIPES]

FAMILIES = {f.name: f for f in _FAMILIES}


def build(name: str, num_pdfs: int | None = None) -> Nnet:
    return FAMILIES[name].build(num_pdfs)


def module_fixtures(*names: str):
    """A family test file's module-scoped fixtures: `case`, each of the families `names` in turn,
    and `nnet`, its network (built once per module). Use: `case, nnet = module_fixtures(...)`."""
    @pytest.fixture(scope="module", params=names)
    def case(request):
        return request.param

    @pytest.fixture(scope="module")
    def nnet(case):
        return build(case)

    return case, nnet
