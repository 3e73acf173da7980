"""Chain models through the pip-only decoding path and vosk, as Kaldi decodes them
(docs/kaldi-formats.md 7.1-7.2): final.mdl with an EMPTY priors vector and a network whose
`output` has no log-softmax (plus an `output-xent` the decoder ignores), `frame_subsampling_factor`
(3) in the model dir, a graph made with `utils/mkgraph.sh --self-loop-scale 1.0`, decoding with
`--acwt 1.0 --post-decode-acwt 10.0`.

The system: the shared FSDD GMM system's lang and test data (tests/frontend/gmm_system.py), a
monophone chain tree and transition model for its phones (kaldi_avg.chain.topology, what
local/chain/prepare.sh builds without Kaldi) and a randomly initialised chain TDNN. Its words are
garbage; the checks are that our decode computes what Kaldi's would (every third frame, no priors,
the lattices scaled) and that vosk, real Kaldi code reading the same final.mdl and HCLG.fst with
vosk's chain settings, produces the same garbage."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kaldi_avg.chain.topology import monophone_chain_tree, write_chain_tree_dir
from kaldi_avg.frontend.decode import DecodeOptions, MappedDecoder
from kaldi_avg.frontend.decode_steps import DecodeError, frame_subsampling_factor, main_nnet3
from kaldi_avg.frontend.graph import load_graph, mkgraph
from kaldi_avg.frontend.hmm import read_tree, to_khg
from kaldi_avg.frontend.lang import read_int_list, read_symbol_table
from kaldi_avg.frontend.lattice import read_lattice_archive
from kaldi_avg.frontend.score import read_transcripts
from kaldi_avg.frontend.vosk_model import (
    VoskOptions,
    chain_model,
    decode_with_vosk,
    make_vosk_model,
    vosk_lm_weight,
)
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.graph import NnetModule
from tests.frontend.gmm_system import REPO, gmm_system
from tests.model.test_compute_subsampling import chain_network

SUBSAMPLING = 3
DECODE_OPTS = ["--acwt", "1.0", "--post-decode-acwt", "10.0", "--beam", "13.0", "--lattice-beam", "6.0"]
ENV = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "LC_ALL": "C"}


@pytest.fixture(scope="module")
def chain_system(tmp_path_factory):
    """(GMM system, exp/chain): tree, 0.trans_mdl, final.mdl (random chain TDNN, empty priors),
    frame_subsampling_factor, phones.txt, graph/ (mkgraph --self-loop-scale 1.0)."""
    system = gmm_system()
    root = tmp_path_factory.mktemp("chain")
    exp = root / "exp" / "chain"
    nonsil = read_int_list(str(system.lang / "phones" / "nonsilence.csl"))
    sil = read_int_list(str(system.lang / "phones" / "silence.csl"))
    tree, tm = monophone_chain_tree(nonsil, sil)
    write_chain_tree_dir(str(exp), tree, tm, [])
    Nnet3Model(chain_network(tm.num_pdfs, seed=4, scale=0.4), tm, None).write(str(exp / "final.mdl"))
    (exp / "frame_subsampling_factor").write_text(f"{SUBSAMPLING}\n")
    shutil.copyfile(system.lang / "phones.txt", exp / "phones.txt")
    mkgraph(str(system.lang_test), str(exp), str(exp / "graph"), self_loop_scale=1.0)
    return system, exp


def decode(system, exp, name: str, *opts: str) -> str:
    """steps/nnet3/decode.sh [opts] exp/chain/graph data/test exp/chain/<name>, one job; the
    decode dir."""
    decode_dir = exp / name
    argv = ["--nj", "1", *opts, str(exp / "graph"), str(system.test), str(decode_dir)]
    assert main_nnet3(argv) == 0
    return decode_dir


@pytest.fixture(scope="module")
def chain_decoded(chain_system):
    system, exp = chain_system
    return decode(system, exp, "decode_test", *DECODE_OPTS)


def test_the_model_is_a_chain_model(chain_system):
    system, exp = chain_system
    am = read_nnet3_file(str(exp / "final.mdl"))
    assert am.priors is None and "prior-dimension: 0\n" in am.info()
    assert "output.log-softmax" not in am.nnet.components and am.nnet.has_node("output-xent")
    assert frame_subsampling_factor(str(exp)) == SUBSAMPLING
    assert chain_model(str(exp / "final.mdl")) == (True, SUBSAMPLING)


def test_decode_runs_the_network_at_every_third_frame_without_priors(chain_system, chain_decoded):
    """hyp.txt is what the mapped decoder gives on the raw network output (no priors, no
    log-softmax) at frames 0, 3, 6, ... computed here in one forward pass, at acoustic scale 1."""
    system, exp = chain_system
    compute_log = (chain_decoded / "log" / "compute.1.log").read_text()
    assert f"compute --use-priors=true --frame-subsampling-factor={SUBSAMPLING} --frames-per-chunk=50" in compute_log
    decode_log = (chain_decoded / "log" / "decode.1.log").read_text()
    assert f"nnet3-latgen-faster --frame-subsampling-factor={SUBSAMPLING} " in decode_log
    assert "--acoustic-scale=1.0 " in decode_log and "| lattice-scale --acoustic-scale=10" in decode_log

    am = read_nnet3_file(str(exp / "final.mdl"))
    module = NnetModule(am.nnet).eval()
    left, right = model_context(am.nnet)
    decoder = MappedDecoder(load_graph(str(exp / "graph")), to_khg(am.trans_model, read_tree(str(exp / "tree"))),
                            DecodeOptions(acoustic_scale=1.0, beam=13.0, lattice_beam=6.0))
    words = {i: w for w, i in read_symbol_table(str(exp / "graph" / "words.txt")).items()}
    data = DataDir(str(system.test))
    frames = {}
    want = {}
    for utt in data.utts:
        x = np.asarray(data.feats[utt], np.float32)
        padded = x[np.clip(np.arange(-left, len(x) + right), 0, len(x) - 1)]   # edge frames repeated
        with torch.no_grad():
            out = module(torch.from_numpy(padded)[None], left_context=left, num_frames=len(x))[0].numpy()
        loglikes = out[::SUBSAMPLING]
        frames[utt] = loglikes.shape[0]
        hyp, _ = decoder.decode(utt, loglikes)
        want[utt] = [words[w] for w in hyp.word_ids] if hyp else None
    got = read_transcripts(str(chain_decoded / "hyp.txt"))
    assert got == {u: w for u, w in want.items() if w is not None}
    # the decoder saw ceil(T / 3) frames of each utterance
    seen = dict(re.findall(r"Log-like per frame for utterance (\S+) is \S+ over (\d+) frames", decode_log))
    assert {u: int(n) for u, n in seen.items()} == {u: frames[u] for u in got}
    assert all(frames[u] == -(-data.feats.shape(u)[0] // SUBSAMPLING) for u in data.utts)
    # garbage, but not one word for everything: the outputs differ between utterances
    assert len({" ".join(w) for w in got.values()}) >= 3


def test_post_decode_acwt_scales_the_lattices(chain_system, chain_decoded):
    """lat.1.gz of --post-decode-acwt 10 is that of 1.0 with acoustic costs times 10
    (lattice-scale --acoustic-scale=10); hypotheses are unchanged, and the best path at LM weight
    10 is the decoder's best path at acoustic scale 1 (why chain recipes scale by 10)."""
    system, exp = chain_system
    plain = decode(system, exp, "decode_test_post1", "--acwt", "1.0", "--beam", "13.0", "--lattice-beam", "6.0",
                   "--skip-scoring", "true")
    assert (plain / "hyp.txt").read_text() == (chain_decoded / "hyp.txt").read_text()
    assert "lattice-scale" not in (plain / "log" / "decode.1.log").read_text()
    scaled = dict(read_lattice_archive(str(chain_decoded / "lat.1.gz")))
    unscaled = dict(read_lattice_archive(str(plain / "lat.1.gz")))
    assert sorted(scaled) == sorted(unscaled) and len(scaled) > 50
    for utt, a in scaled.items():
        b = unscaled[utt]
        for field in ("src", "dst", "olabel"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(a.graph, b.graph)
        np.testing.assert_allclose(a.acoustic, 10 * b.acoustic, rtol=1e-5, atol=1e-4)
        assert sorted(a.finals) == sorted(b.finals)
        np.testing.assert_allclose([a.finals[s] for s in sorted(a.finals)],
                                   [(g, 10 * c) for g, c in (b.finals[s] for s in sorted(b.finals))], rtol=1e-5)
    assert np.abs(np.concatenate([lat.acoustic for lat in scaled.values()])).max() > 10   # not vacuous
    hyp = read_transcripts(str(chain_decoded / "hyp.txt"))
    lmwt10 = read_transcripts(str(chain_decoded / "scoring_kaldi" / "penalty_0.0" / "10.txt"))
    assert sum(lmwt10[u] == hyp[u] for u in hyp) >= 0.98 * len(hyp)
    assert (chain_decoded / "scoring_kaldi" / "best_wer").read_text().startswith("%WER ")


def test_decode_reads_init_info_and_rejects_a_bad_factor(tmp_path):
    """decode.sh: frame_subsampling_factor, else init/info.txt's frame_subsampling_factor line, else none."""
    assert frame_subsampling_factor(str(tmp_path)) is None
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "info.txt").write_text("model_left_context 10\nframe_subsampling_factor 3\n")
    assert frame_subsampling_factor(str(tmp_path)) == 3
    (tmp_path / "frame_subsampling_factor").write_text("2\n")
    assert frame_subsampling_factor(str(tmp_path)) == 2
    (tmp_path / "frame_subsampling_factor").write_text("three\n")
    with pytest.raises(DecodeError, match="frame_subsampling_factor: expected a positive frame subsampling"):
        frame_subsampling_factor(str(tmp_path))


def test_mkgraph_self_loop_scale_and_the_chain_warning(chain_system, tmp_path, capsys):
    """--self-loop-scale 1.0 gives another graph than the 0.1 default (transition scale 1.0 in
    both, Kaldi's default); the default on a chain model dir warns, as mkgraph.sh does."""
    system, exp = chain_system
    capsys.readouterr()
    mkgraph(str(system.lang_test), str(exp), str(tmp_path / "graph01"))
    assert "WARNING: chain models need '--self-loop-scale 1.0'" in capsys.readouterr().err
    a = (exp / "graph" / "HCLG.fst").read_bytes()
    b = (tmp_path / "graph01" / "HCLG.fst").read_bytes()
    assert a != b and len(a) == len(b)   # the same arcs, other self-loop weights
    mkgraph(str(system.lang_test), str(exp), str(tmp_path / "graph1"), self_loop_scale=1.0)
    assert "WARNING" not in capsys.readouterr().err
    assert (tmp_path / "graph1" / "HCLG.fst").read_bytes() == a


def test_vosk_model_dir_gets_chain_settings(chain_system, tmp_path):
    system, exp = chain_system
    make_vosk_model(str(exp), str(exp / "graph"), str(system.mfcc_conf), str(tmp_path / "vosk"))
    conf = (tmp_path / "vosk" / "conf" / "model.conf").read_text()
    assert f"--frame-subsampling-factor={SUBSAMPLING}\n" in conf and "--acoustic-scale=1.0\n" in conf
    # a cross-entropy model (priors, no frame_subsampling_factor) keeps the hybrid settings
    ce = tmp_path / "ce"
    ce.mkdir()
    am = read_nnet3_file(str(exp / "final.mdl"))
    am.priors = np.full(am.trans_model.num_pdfs, 1 / am.trans_model.num_pdfs, np.float32)
    am.write(str(ce / "final.mdl"))
    assert chain_model(str(ce / "final.mdl")) == (False, 1)
    assert VoskOptions.for_model(str(ce / "final.mdl")) == VoskOptions()
    assert VoskOptions.for_model(str(exp / "final.mdl"), beam=10.0) == VoskOptions(
        acoustic_scale=1.0, frame_subsampling_factor=SUBSAMPLING, beam=10.0)
    run = [sys.executable, "-m", "kaldi_avg.frontend.vosk_model", "is-chain"]
    for model, want in ((exp, "true"), (ce / "final.mdl", "false")):
        r = subprocess.run(run + [str(model)], capture_output=True, text=True, env=ENV, cwd=REPO)
        assert r.returncode == 0 and r.stdout == f"{want}\n", r.stderr
    assert vosk_lm_weight(1.0, 10.0) == pytest.approx(9.0)


@pytest.fixture(scope="module")
def recipe(chain_system, tmp_path_factory):
    """A recipe dir (steps/, utils/, local/vosk_check.sh of egs/fsdd/s5) around the chain system."""
    system, exp = chain_system
    d = tmp_path_factory.mktemp("recipe")
    for name in ("steps", "utils"):
        (d / name).symlink_to(REPO / name)
    (d / "local").mkdir()
    (d / "local" / "vosk_check.sh").symlink_to(REPO / "egs" / "fsdd" / "s5" / "local" / "vosk_check.sh")
    return d


def test_vosk_check_decodes_the_chain_model_like_our_decode(chain_system, recipe):
    """local/vosk_check.sh on the chain model: vosk (Kaldi's online nnet3 decoder with
    --frame-subsampling-factor=3 --acoustic-scale=1.0 from conf/model.conf) and our decode.sh with
    --acwt 1.0 --post-decode-acwt 10.0, compared at LM weight 9 (vosk's graph scale 0.9), agree
    on the words of every utterance outside the near ties."""
    pytest.importorskip("vosk")
    system, exp = chain_system
    decode_dir = exp / "decode_vosk_check"
    r = subprocess.run(["bash", "local/vosk_check.sh", str(system.mfcc_conf), str(exp), str(exp / "graph"),
                        str(system.test), str(decode_dir)], cwd=recipe, env=ENV, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--acwt 1.0 --post-decode-acwt 10.0" in r.stderr    # decode.sh echoes its command line
    conf = (exp / "vosk" / "conf" / "model.conf").read_text()
    assert f"--frame-subsampling-factor={SUBSAMPLING}\n" in conf and "--acoustic-scale=1.0\n" in conf
    m = re.search(rf"identical to {re.escape(str(decode_dir))} on (\d+)/(\d+)", r.stderr)
    assert m, r.stderr[-3000:]
    identical, compared = int(m.group(1)), int(m.group(2))
    assert compared >= 90 and identical >= compared - 2, (decode_dir / "vosk" / "compare.txt").read_text()
    vosk_hyps = read_transcripts(str(decode_dir / "vosk" / "hyp.txt"))
    assert len({" ".join(w) for w in vosk_hyps.values()}) >= 3


def test_vosk_without_frame_subsampling_decodes_otherwise(chain_system, chain_decoded, tmp_path):
    """Negative control: the same final.mdl in vosk with --frame-subsampling-factor=1 gives other
    words on many utterances (so the agreement above rests on vosk's subsampled computation)."""
    pytest.importorskip("vosk")
    system, exp = chain_system
    make_vosk_model(str(exp), str(exp / "graph"), str(system.mfcc_conf), str(tmp_path / "vosk"),
                    VoskOptions(acoustic_scale=1.0, frame_subsampling_factor=1))
    data = DataDir(str(system.test))
    utts = data.utts[::2]
    texts = decode_with_vosk(str(tmp_path / "vosk"), [data.wav_scp[u] for u in utts])
    ours = read_transcripts(str(chain_decoded / "scoring_kaldi" / "penalty_0.0" / "9.txt"))
    differ = sum(t.split() != ours.get(u) for u, t in zip(utts, texts))
    assert differ >= len(utts) // 4, f"only {differ} of {len(utts)} differ"
