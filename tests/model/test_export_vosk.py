"""Exported final.mdl files decode in real Kaldi code (vosk) exactly as our own pipeline does.

On FSDD with a small monophone GMM system (alignments, HCLG), a feed-forward net, an LSTM and an
LSTMP (also with dropout masks, proportion 0.2 and 0), a TDNN-F, a CNN (TimeHeightConvolution,
one layer with optional time offsets) and a restricted-attention network are built from xconfig
files, trained
briefly in PyTorch, exported as final.mdl and decoded twice: by vosk (Kaldi's nnet3 + online
decoder reading our final.mdl and HCLG.fst) and by our `compute` + mapped decoder. The words
must agree on every test utterance. A deliberately broken export (LSTM gates i and f swapped)
must fail the same check.
"""
import numpy as np
import pytest
import torch

from kaldi_avg.frontend.decode import DecodeOptions, MappedDecoder
from kaldi_avg.frontend.graph import load_graph
from kaldi_avg.frontend.hmm import read_tree, to_khg
from kaldi_avg.frontend.lang import read_symbol_table
from kaldi_avg.frontend.vosk_model import VoskOptions, decode_with_vosk, make_vosk_model
from kaldi_avg.kaldi.alignment import pdf_counts, read_alignments
from kaldi_avg.kaldi.nnet3.am import Nnet3Model
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.tables import read_matrix_table
from kaldi_avg.kaldi.transition import read_transition_model
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from ..frontend.gmm_system import gmm_system

pytest.importorskip("vosk")

NETWORKS = {
    "ff": """input dim=13 name=input
relu-layer name=tdnn1 input=Append(-2,-1,0,1,2) dim=64
output-layer name=output dim=NUM_PDFS
""",
    "lstm": """input dim=13 name=input
relu-layer name=tdnn1 input=Append(-1,0,1) dim=48
fast-lstm-layer name=lstm1 cell-dim=32 delay=-1
output-layer name=output output-delay=2 dim=NUM_PDFS
""",
    "lstmp": """input dim=13 name=input
relu-layer name=tdnn1 input=Append(-1,0,1) dim=48
fast-lstmp-layer name=lstm1 cell-dim=32 recurrent-projection-dim=16 non-recurrent-projection-dim=8 delay=-1 decay-time=20
output-layer name=output output-delay=2 dim=NUM_PDFS
""",
}
NETWORKS.update({
    "tdnnf": """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=64
tdnnf-layer name=tdnnf2 dim=64 bottleneck-dim=16 time-stride=1 bypass-scale=0.66
tdnnf-layer name=tdnnf3 dim=64 bottleneck-dim=16 time-stride=3 bypass-scale=0.66
linear-component name=prefinal-l dim=32 orthonormal-constraint=-1.0
prefinal-layer name=prefinal input=prefinal-l small-dim=32 big-dim=64
output-layer name=output dim=NUM_PDFS
""",
    "cnn": """input dim=13 name=input
conv-relu-batchnorm-layer name=cnn1 height-in=13 height-out=13 time-offsets=-1,0,1 height-offsets=-1,0,1 num-filters-out=4
conv-relu-batchnorm-layer name=cnn2 height-in=13 height-out=6 height-subsample-out=2 time-offsets=-1,0,1 required-time-offsets=0 height-offsets=-1,0,1 num-filters-out=6
relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=64
output-layer name=output dim=NUM_PDFS
""",
    "attention": """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=64
attention-relu-renorm-layer name=attention1 num-heads=2 value-dim=16 key-dim=8 num-left-inputs=4 num-right-inputs=1 time-stride=1
output-layer name=output dim=NUM_PDFS
""",
})
# fast-lstmp with Kaldi's per-frame gate dropout (DropoutMaskComponent): trained with random masks,
# exported with the proportion; decoders run it in test mode (gates scaled by 1 - p).
NETWORKS.update({f"lstmp-dropout{p}": NETWORKS["lstmp"].replace("decay-time=20",
                                                                  f"decay-time=20 dropout-proportion={p}")
                 for p in ("0.2", "0.0")})


@pytest.fixture(scope="module")
def system():
    return gmm_system()


@pytest.fixture(scope="module")
def training_data(system):
    feats = dict(read_matrix_table(f"scp:{system.train}/feats.scp"))
    pdfs = read_alignments(str(system.ali))
    utts = sorted(u for u in pdfs if u in feats and len(feats[u]) == len(pdfs[u]))
    return [(feats[u], pdfs[u]) for u in utts]


def train_briefly(nnet, data, steps=90, batch=24, seed=0):
    """Cross-entropy training on whole utterances (edge-padded to a common length, padding
    masked out); enough for clearly non-random outputs in a few seconds."""
    torch.manual_seed(seed)
    module = NnetModule(nnet)
    module.train()
    module.set_natural_gradient(False)   # Adam on plain gradients (natural gradient is KaldiSgd's)
    left, right = model_context(nnet)
    opt = torch.optim.Adam(module.parameters(), lr=5e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        picked = [data[i] for i in rng.choice(len(data), batch, replace=False)]
        T = max(len(f) for f, _ in picked)
        x = np.stack([f[np.clip(np.arange(-left, T + right), 0, len(f) - 1)] for f, _ in picked])
        y = np.stack([np.pad(p, (0, T - len(p))) for _, p in picked]).astype(np.int64)
        mask = torch.from_numpy(np.stack([np.arange(T) < len(p) for _, p in picked]).astype(np.float32))
        out = module(torch.from_numpy(x), left_context=left, num_frames=T)
        logp = out.gather(2, torch.from_numpy(y)[..., None])[..., 0]
        loss = -(logp * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.write_back()
    return nnet


def our_hypotheses(model: Nnet3Model, system, utts, feats, acoustic_scale=0.1 / 0.9):
    """steps/nnet3/decode.sh as vosk's looped computation does it: one chunk per utterance.
    vosk rescales its final lattice with graph scale 0.9, which picks the same best path as
    acoustic scale 0.1/0.9."""
    tm = to_khg(model.trans_model, read_tree(str(system.ali / "tree")))
    opts = DecodeOptions(acoustic_scale=acoustic_scale, beam=13.0, lattice_beam=6.0)
    decoder = MappedDecoder(load_graph(str(system.graph)), tm, opts)
    words = {i: w for w, i in read_symbol_table(str(system.graph / "words.txt")).items()}
    module = NnetModule(model.nnet)
    log_priors = np.log(model.priors.astype(np.float32))
    out = []
    for u in utts:
        loglikes = compute_utterance(module, feats[u], ChunkOptions(frames_per_chunk=100000,
                                                                     extra_left_context_initial=0),
                                     model_context(model.nnet), log_priors)
        hyp, _ = decoder.decode(u, loglikes)
        out.append(" ".join(words[w] for w in hyp.word_ids) if hyp else "")
    return out


def vosk_hypotheses(model: Nnet3Model, system, wavs, tmp_path):
    path = tmp_path / "final.mdl"
    model.write(str(path))
    make_vosk_model(str(path), str(system.graph), str(system.mfcc_conf), str(tmp_path / "vosk"),
                    VoskOptions(beam=13.0, lattice_beam=6.0))
    return decode_with_vosk(str(tmp_path / "vosk"), wavs)


@pytest.fixture(scope="module")
def test_set(system):
    feats = dict(read_matrix_table(f"scp:{system.test}/feats.scp"))
    wav_scp = dict(line.split(None, 1) for line in open(system.test / "wav.scp").read().splitlines())
    text = dict(line.split(None, 1) for line in open(system.test / "text").read().splitlines())
    utts = sorted(feats)
    return utts, feats, [wav_scp[u].strip() for u in utts], [text[u].strip() for u in utts]


@pytest.fixture(scope="module")
def models(system, training_data):
    tm = read_transition_model(str(system.ali / "final.mdl"))
    counts = pdf_counts(read_alignments(str(system.ali)), tm.num_pdfs).astype(np.float64) + 1.0
    priors = (counts / counts.sum()).astype(np.float32)
    out = {}
    for name, xconfig in NETWORKS.items():
        nnet = build_nnet(xconfig, f"{name}.xconfig", num_pdfs=tm.num_pdfs, seed=1)
        out[name] = Nnet3Model(train_briefly(nnet, training_data), tm, priors)
    return out


@pytest.mark.parametrize("name", list(NETWORKS))
def test_vosk_decodes_our_final_mdl_like_we_do(name, models, system, test_set, tmp_path):
    utts, feats, wavs, refs = test_set
    model = models[name]
    ours = our_hypotheses(model, system, utts, feats)
    theirs = vosk_hypotheses(model, system, wavs, tmp_path)
    # Near ties (the decision flips between acoustic scales 0.1 and 0.1/0.9) may go either way in
    # vosk's lattice rescoring; everywhere else the words must be identical.
    other_scale = our_hypotheses(model, system, utts, feats, acoustic_scale=0.1)
    ties = [i for i, (a, b) in enumerate(zip(ours, other_scale)) if a != b]
    assert len(ties) <= len(utts) // 20, f"{name}: {len(ties)} near ties; the model is too weakly trained"
    # A briefly trained model also has ties that beam pruning in vosk's lattice generation can break
    # the other way (seen once in 100 with one torch thread: ours "two", vosk "eight", reference
    # "zero"); a real computation difference disagrees on most utterances (test_swapped_gates...).
    compared = [i for i in range(len(utts)) if i not in ties]
    differ = [(utts[i], ours[i], theirs[i]) for i in compared if ours[i] != theirs[i]]
    assert len(differ) <= len(compared) // 50, f"{name}: vosk differs from our decode on {differ}"
    correct = sum(h == r for h, r in zip(ours, refs))
    assert correct >= len(refs) // 2, f"{name}: only {correct}/{len(refs)} correct; the model did not train"


def test_swapped_gates_are_caught(models, system, test_set, tmp_path):
    utts, feats, wavs, _ = test_set
    model = models["lstm"]
    ours = our_hypotheses(model, system, utts, feats)
    w = model.nnet.components["lstm1.W_all"]
    C = w.linear_params.shape[0] // 4
    saved = (w.linear_params.copy(), w.bias_params.copy())
    try:
        for arr in (w.linear_params, w.bias_params):  # rows are gates i, f, c, o
            arr[:2 * C] = np.concatenate([arr[C:2 * C], arr[:C]])
        broken = vosk_hypotheses(model, system, wavs, tmp_path)
    finally:
        w.linear_params[...], w.bias_params[...] = saved
    assert broken != ours, "vosk decoded a model with swapped LSTM gates like the correct one"


def test_mirrored_convolution_is_caught(models, system, test_set, tmp_path):
    """The same check for the convolution's layout: its height offsets -1 and +1 exchanged (the
    filters mirrored in height) must change what vosk decodes."""
    utts, feats, wavs, _ = test_set
    model = models["cnn"]
    ours = our_hypotheses(model, system, utts, feats)
    conv = model.nnet.components["cnn1.conv"]
    f_in = conv.num_filters_in
    blocks = {offset: slice(i * f_in, (i + 1) * f_in) for i, offset in enumerate(conv.offsets)}
    saved = conv.linear_params.copy()
    try:
        for t in (-1, 0, 1):
            conv.linear_params[:, blocks[(t, -1)]] = saved[:, blocks[(t, 1)]]
            conv.linear_params[:, blocks[(t, 1)]] = saved[:, blocks[(t, -1)]]
        broken = vosk_hypotheses(model, system, wavs, tmp_path)
    finally:
        conv.linear_params[...] = saved
    differ = sum(a != b for a, b in zip(ours, broken))
    assert differ > len(utts) // 10, f"vosk decoded a mirrored convolution like the correct one ({differ} differ)"
