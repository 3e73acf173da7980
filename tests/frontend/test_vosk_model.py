"""vosk model dirs: real Kaldi (vosk's online nnet3 decoder) decodes with our HCLG and an nnet3
acoustic model on our transition model, and gives the same hypotheses as our Python decoder
(its lattices rescored at vosk's graph scale 0.9, which vosk applies to its final lattice).

The acoustic model is a small feed-forward network (Append(Offset -2..2) -> affine -> ReLU ->
affine -> LogSoftmax, docs/dependencies.md 4) trained for a few seconds with torch on the GMM alignments
and written by hand as a text nnet3 final.mdl (with priors)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kaldi_avg.frontend.decode import DecodeOptions, MappedDecoder
from kaldi_avg.frontend.decode_steps import decode_nnet3
from kaldi_avg.frontend.graph import load_graph
from kaldi_avg.frontend.hmm import read_tree, to_khg
from kaldi_avg.frontend.lang import read_symbol_table
from kaldi_avg.frontend.lattice import best_paths, parse_lattice
from kaldi_avg.frontend.score import compute_wer, read_transcripts
from kaldi_avg.frontend.vosk_model import VoskOptions, decode_with_vosk, make_vosk_model, vosk_lm_weight
from kaldi_avg.kaldi.alignment import read_transition_ids
from kaldi_avg.kaldi.binary import KaldiWriter
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.transition import read_transition_model
from tests.frontend.gmm_system import REPO, gmm_system

pytest.importorskip("vosk")
CONTEXT = (-2, -1, 0, 1, 2)
HIDDEN = 96
EPOCHS = 4


def splice(x: np.ndarray) -> np.ndarray:
    """Append(Offset(input,-2) ... Offset(input,2)) with edge frames repeated, as Kaldi pads."""
    idx = np.clip(np.arange(x.shape[0])[:, None] + np.asarray(CONTEXT)[None, :], 0, x.shape[0] - 1)
    return x[idx].reshape(x.shape[0], -1)


def _component(w: KaldiWriter, name: str, kind: str, params=None, dim: int = 0) -> None:
    w.raw(f"<ComponentName> {name} <{kind}> ")
    if kind == "AffineComponent":
        W, b = params
        w.raw("<LearningRate> 0.001 <LinearParams> ")
        w.matrix(W)
        w.raw("<BiasParams> ")
        w.vector(b)
    else:
        w.raw(f"<Dim> {dim} <ValueAvg> ")
        w.vector(np.zeros(0))
        w.raw("<DerivAvg> ")
        w.vector(np.zeros(0))
        w.raw("<Count> 0 <OderivRms> ")
        w.vector(np.zeros(0))
        w.raw("<OderivCount> 0 <NumDimsSelfRepaired> 0 <NumDimsProcessed> 0 ")
    w.raw(f"</{kind}> \n")


def write_text_am(path: str, trans_model, layers, priors: np.ndarray, feat_dim: int) -> None:
    """A text final.mdl: transition model, the FF nnet3, left/right context and priors."""
    (W1, b1), (W2, b2) = layers
    w = KaldiWriter(binary=False, text_digits=9)
    trans_model.write(w)
    offsets = ", ".join("input" if o == 0 else f"Offset(input, {o})" for o in CONTEXT)
    w.raw("<Nnet3> \n"
          f"input-node name=input dim={feat_dim}\n"
          f"component-node name=affine1 component=affine1 input=Append({offsets})\n"
          "component-node name=relu1 component=relu1 input=affine1\n"
          "component-node name=affine2 component=affine2 input=relu1\n"
          "component-node name=log_softmax component=log_softmax input=affine2\n"
          "output-node name=output input=log_softmax objective=linear\n\n"
          "<NumComponents> 4 \n")
    _component(w, "affine1", "AffineComponent", (W1, b1))
    _component(w, "relu1", "RectifiedLinearComponent", dim=W1.shape[0])
    _component(w, "affine2", "AffineComponent", (W2, b2))
    _component(w, "log_softmax", "LogSoftmaxComponent", dim=W2.shape[0])
    w.raw(f"</Nnet3> <LeftContext> {-min(CONTEXT)} <RightContext> {max(CONTEXT)} <Priors> ")
    w.vector(priors)
    with open(path, "wb") as f:
        f.write(w.getvalue())


def train_ff(system, num_pdfs: int, tid2pdf: np.ndarray):
    """A few seconds of torch training on raw MFCCs and GMM alignments; the input mean/variance
    normalisation is folded into the first affine layer (vosk gives the network raw MFCCs)."""
    data = DataDir(str(system.train))
    ali = {}
    for job in (1, 2):
        ali.update(read_transition_ids(str(system.ali / f"ali.{job}.gz")))
    feats = [np.asarray(data.feats[u], np.float32) for u in sorted(ali)]
    x = np.concatenate([splice(f) for f in feats])
    y = np.concatenate([tid2pdf[ali[u]] for u in sorted(ali)])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, num_pdfs))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy((x - mean) / std), torch.from_numpy(y.astype(np.int64))
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(yt)).split(256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            opt.step()
    W1 = net[0].weight.detach().numpy() / std[None, :]
    b1 = net[0].bias.detach().numpy() - W1 @ mean
    layers = [(W1, b1), (net[2].weight.detach().numpy(), net[2].bias.detach().numpy())]
    counts = np.bincount(y, minlength=num_pdfs).astype(np.float64)
    priors = np.maximum(counts / counts.sum(), 5e-6)  # nnet3-am-train-transitions' prior floor
    return layers, priors / priors.sum()


def forward(layers, priors, x: np.ndarray) -> np.ndarray:
    """log-softmax - log priors (what nnet3's decodables feed the decoder)."""
    (W1, b1), (W2, b2) = layers
    h = np.maximum(splice(x) @ W1.T + b1, 0.0)
    z = h @ W2.T + b2
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True)) - np.log(priors)


@pytest.fixture(scope="module")
def ff_model(tmp_path_factory):
    system = gmm_system()
    root = tmp_path_factory.mktemp("ff")
    tm = read_transition_model(str(system.ali / "final.mdl"))
    layers, priors = train_ff(system, tm.num_pdfs, tm.transition_id_to_pdf_array())
    exp = root / "exp" / "ff"
    exp.mkdir(parents=True)
    write_text_am(str(exp / "final.mdl"), tm, layers, priors, feat_dim=13)
    shutil.copyfile(system.ali / "tree", exp / "tree")
    shutil.copyfile(system.ali / "phones.txt", exp / "phones.txt")
    (exp / "cmvn_opts").write_text("--norm-means=false --norm-vars=false\n")
    return system, exp, layers, priors


def word_costs(lat, lmwt: float) -> dict[int, float]:
    """Best path cost (graph + acoustic / lmwt) through the lattice for each (single) word."""
    out = {}
    n = 1 + max([lat.start, *lat.finals, int(lat.src.max()), int(lat.dst.max())])
    for word in set(lat.olabel.tolist()) - {0}:
        keep = (lat.olabel == 0) | (lat.olabel == word)
        src, dst = lat.src[keep], lat.dst[keep]
        cost = lat.graph[keep] + lat.acoustic[keep] / lmwt
        best = np.full(n, np.inf)
        best[lat.start] = 0.0
        while True:  # a DAG: relaxing all arcs converges within its depth
            new = best.copy()
            np.minimum.at(new, dst, best[src] + cost)
            if np.array_equal(new, best):
                break
            best = new
        out[word] = min(best[s] + g + a / lmwt for s, (g, a) in lat.finals.items())
    return out


@pytest.fixture(scope="module")
def python_hyps(ff_model):
    """{"one_best": the decoder's best paths, "vosk_scales": lattice best paths at vosk's scales,
    "costs": each word's best cost at vosk's scales (graph + acoustic / 9)}."""
    system, exp, layers, priors = ff_model
    tm = read_transition_model(str(exp / "final.mdl"))
    opts = VoskOptions()
    decoder = MappedDecoder(load_graph(str(system.graph)), to_khg(tm, read_tree(str(exp / "tree"))),
                            DecodeOptions(opts.acoustic_scale, opts.beam, opts.lattice_beam, opts.max_active,
                                          opts.min_active))
    words = {i: w for w, i in read_symbol_table(str(system.graph / "words.txt")).items()}
    lmwt = vosk_lm_weight(opts.acoustic_scale)
    data = DataDir(str(system.test))
    out = {"one_best": {}, "vosk_scales": {}, "costs": {}}
    for utt in data.utts:
        hyp, lattice = decoder.decode(utt, forward(layers, priors, np.asarray(data.feats[utt], np.float32)))
        out["one_best"][utt] = [words[w] for w in hyp.word_ids]
        lat = parse_lattice(lattice.splitlines(), utt)
        out["vosk_scales"][utt] = [words[w] for w in best_paths(lat, [lmwt], [0.0])[(lmwt, 0.0)]]
        out["costs"][utt] = {words[w]: c for w, c in word_costs(lat, lmwt).items()}
    return out


def assert_same_up_to_near_ties(vosk_hyps: dict, python_hyps: dict) -> None:
    """vosk's words equal ours, except (at most 2%) where the two words' costs differ by less
    than 0.05 (vosk's MFCCs come from Kaldi's code, ours from kaldi-native-fbank: ~1e-4 apart)."""
    differ = [u for u in vosk_hyps if vosk_hyps[u] != python_hyps["vosk_scales"][u]]
    assert len(differ) <= 0.02 * len(vosk_hyps), differ
    for u in differ:
        costs = python_hyps["costs"][u]
        (ours,), (theirs,) = python_hyps["vosk_scales"][u], vosk_hyps[u]
        assert 0.9 * abs(costs[theirs] - costs[ours]) < 0.05, (u, ours, theirs, costs)


def test_vosk_decodes_our_model_and_graph_like_the_python_decoder(ff_model, python_hyps, tmp_path):
    system, exp, _, _ = ff_model
    make_vosk_model(str(exp / "final.mdl"), str(system.graph), str(system.mfcc_conf), str(tmp_path / "vosk"))
    for name in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst", "graph/words.txt",
                 "graph/phones/word_boundary.int"):
        assert (tmp_path / "vosk" / name).is_file(), name
    conf = (tmp_path / "vosk" / "conf" / "model.conf").read_text()
    assert "--frame-subsampling-factor=1\n" in conf and "--acoustic-scale=0.1\n" in conf
    assert "--endpoint.silence-phones=1:2:3:4:5:6:7:8:9:10\n" in conf
    data = DataDir(str(system.test))
    utts = data.utts[::2]
    texts = decode_with_vosk(str(tmp_path / "vosk"), [data.wav_scp[u] for u in utts])
    vosk_hyps = {u: t.split() for u, t in zip(utts, texts)}
    assert_same_up_to_near_ties(vosk_hyps, python_hyps)
    for u, costs in python_hyps["costs"].items():  # the per-word costs agree with the lattice best path
        assert [min(costs, key=costs.get)] == python_hyps["vosk_scales"][u]
    refs = read_transcripts(str(system.test / "text"))
    assert compute_wer({u: refs[u] for u in utts}, vosk_hyps).wer <= 20.0


def test_vosk_rejects_a_graph_dir_without_silence_phones(ff_model, tmp_path):
    system, exp, _, _ = ff_model
    graph = tmp_path / "graph"
    shutil.copytree(system.graph, graph)
    os.unlink(graph / "phones" / "silence.csl")
    with pytest.raises(ValueError, match="silence.csl to exist"):
        make_vosk_model(str(exp / "final.mdl"), str(graph), str(system.mfcc_conf), str(tmp_path / "vosk"))


@pytest.fixture(scope="module")
def nnet3_decoded(ff_model):
    system, exp, _, _ = ff_model
    decode_dir = exp / "decode_test"
    decode_nnet3(str(system.graph), str(system.test), str(decode_dir), DecodeOptions(beam=13.0, lattice_beam=6.0),
                 nj=1)
    return decode_dir


def test_nnet3_decode_script_uses_kaldi_avg_compute(nnet3_decoded, python_hyps):
    """steps/nnet3/decode.sh: apply-cmvn per cmvn_opts, kaldi-avg compute --use-priors=true, decoding."""
    decode_dir = nnet3_decoded
    assert read_transcripts(str(decode_dir / "hyp.txt")) == python_hyps["one_best"]
    assert read_transcripts(str(decode_dir / "scoring_kaldi" / "penalty_0.0" / "9.txt")) == python_hyps["vosk_scales"]
    assert "compute --use-priors=true --frames-per-chunk=50" in (decode_dir / "log" / "compute.1.log").read_text()
    assert (decode_dir / "scoring_kaldi" / "best_wer").read_text().startswith("%WER ")
    assert not [f for f in os.listdir(decode_dir) if f.startswith(".job")]  # temporary archives removed


def test_vosk_command_line_compares_with_a_decode_dir(ff_model, nnet3_decoded, python_hyps, tmp_path):
    system, exp, _, _ = ff_model
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    run = [sys.executable, "-m", "kaldi_avg.frontend.vosk_model"]
    r = subprocess.run(run + ["make", f"--mfcc-config={system.mfcc_conf}", str(exp), str(system.graph),
                              str(tmp_path / "vosk")], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["decode", f"--compare-with={nnet3_decoded}", str(tmp_path / "vosk"), str(system.test),
                              str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    m = re.search(rf"identical to {re.escape(str(nnet3_decoded))} on (\d+)/(\d+)", r.stderr)
    identical, compared = int(m.group(1)), int(m.group(2))  # near ties are listed, not compared
    assert compared >= 95 and identical >= compared - 2
    assert (f"WARNING: vosk and {nnet3_decoded} differ on {compared - identical} utterance(s)" in r.stderr) == \
        (identical < compared)   # a disagreement outside the near ties is never a quiet line
    vosk_hyps = read_transcripts(str(tmp_path / "out" / "hyp.txt"))
    assert_same_up_to_near_ties(vosk_hyps, python_hyps)
    assert (tmp_path / "out" / "wer").read_text().startswith("%WER ")
    assert len((tmp_path / "out" / "compare.txt").read_text().splitlines()) == 100 - identical
    r = subprocess.run(run + ["make", str(exp)], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 1 and "usage:" in r.stdout + r.stderr


def test_vosk_check_has_teeth(ff_model, python_hyps, tmp_path):
    """Negative control: the same network with its priors permuted must decode differently in vosk
    (so the equality above really compares what vosk computes from our final.mdl)."""
    system, exp, layers, priors = ff_model
    tm = read_transition_model(str(exp / "final.mdl"))
    write_text_am(str(tmp_path / "bad.mdl"), tm, layers, np.random.default_rng(0).permutation(priors), feat_dim=13)
    make_vosk_model(str(tmp_path / "bad.mdl"), str(system.graph), str(system.mfcc_conf), str(tmp_path / "vosk"))
    data = DataDir(str(system.test))
    utts = data.utts[::2]
    texts = decode_with_vosk(str(tmp_path / "vosk"), [data.wav_scp[u] for u in utts])
    assert {u: t.split() for u, t in zip(utts, texts)} != {u: python_hyps["vosk_scales"][u] for u in utts}
