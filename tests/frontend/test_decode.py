"""Decoding (steps/decode.sh, latgen-faster-mapped on log-likelihood matrices), text lattice
archives and Kaldi-format scoring (compute-wer, score_kaldi.sh) on the FSDD GMM system."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys

import kaldi_hmm_gmm as khg
import numpy as np
import pytest

from kaldi_avg.frontend.decode import DecodeOptions, MappedDecoder, gmm_log_likelihoods
from kaldi_avg.frontend.decode_steps import decode_gmm
from kaldi_avg.frontend.featpipe import feature_loader
from kaldi_avg.frontend.gmm_model import GmmModel
from kaldi_avg.frontend.graph import load_graph
from kaldi_avg.frontend.lattice import best_paths, parse_lattice, read_lattice_archive
from kaldi_avg.frontend.score import compute_wer, read_transcripts
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.tables import write_matrix_table
from tests.frontend.gmm_system import REPO, gmm_system

GMM_OPTS = DecodeOptions(acoustic_scale=0.083333, beam=13.0, lattice_beam=6.0)


@pytest.fixture(scope="module")
def system():
    return gmm_system()


@pytest.fixture(scope="module")
def decoded(system):
    decode_dir = system.mono / "decode_test"
    hyps = decode_gmm(str(system.graph), str(system.test), str(decode_dir), GMM_OPTS, nj=2)
    return decode_dir, hyps


def test_gmm_decode_has_low_wer_and_kaldi_files(system, decoded):
    decode_dir, hyps = decoded
    assert len(hyps) == 100
    best = (decode_dir / "scoring_kaldi" / "best_wer").read_text()
    m = re.fullmatch(r"%WER (\d+\.\d\d) \[ (\d+) / 100, (\d+) ins, (\d+) del, (\d+) sub \] "
                     r"(\S+/wer_(\d+)_(\S+))\n", best)
    assert m, best
    assert float(m.group(1)) <= 5.0
    assert os.path.isfile(m.group(6))
    for name in ("lat.1.gz", "lat.2.gz", "num_jobs", "hyp.txt", "log/decode.1.log", "wer_7_0.0", "wer_17_1.0",
                 "scoring_kaldi/test_filt.txt", "scoring_kaldi/penalty_0.5/12.txt", "scoring_kaldi/wer_details/lmwt"):
        assert (decode_dir / name).is_file(), name
    report = (decode_dir / "wer_12_0.0").read_text().splitlines()
    assert re.fullmatch(r"%WER \d+\.\d\d \[ \d+ / 100, \d+ ins, \d+ del, \d+ sub \]", report[0])
    assert report[2] == "Scored 100 sentences, 0 not present in hyp."
    refs = read_transcripts(str(system.test / "text"))
    assert compute_wer(refs, read_transcripts(str(decode_dir / "hyp.txt"))).wer <= 5.0
    log = (decode_dir / "log" / "decode.1.log").read_text()
    assert "Log-like per frame for utterance" in log and "# Ended (code 0)" in log


def test_lattices_agree_with_the_one_best(decoded):
    decode_dir, hyps = decoded
    one_best = read_transcripts(str(decode_dir / "hyp.txt"))
    at_decode_scale = read_transcripts(str(decode_dir / "scoring_kaldi" / "penalty_0.0" / "12.txt"))
    assert all(one_best[u] == at_decode_scale.get(u) for u in one_best)
    with gzip.open(decode_dir / "lat.1.gz", "rt") as f:
        head = f.read(200)
    assert re.match(r"\S+ \n\d+\t\d+\t\d+\t\d+\t[-\d.e]+,[-\d.e]+\n", head)  # Kaldi text Lattice entry
    assert len(list(read_lattice_archive(str(decode_dir / "lat.1.gz")))) + \
        len(list(read_lattice_archive(str(decode_dir / "lat.2.gz")))) == len(hyps)


def test_mapped_matrix_decoding_equals_the_gmm_decodable(system):
    """latgen-faster-mapped on GMM log-likelihoods == khg's DecodableAmDiagGmmScaled decoding."""
    model = GmmModel.read(str(system.mono / "final.mdl"), str(system.mono / "tree"))
    graph = load_graph(str(system.graph))
    decoder = MappedDecoder(graph, model.khg_trans_model, GMM_OPTS)
    reference = khg.LatticeFasterDecoder(graph, khg.LatticeFasterDecoderConfig(beam=13.0, lattice_beam=6.0,
                                                                               max_active=7000))
    data = DataDir(str(system.test))
    load = feature_loader(data, "", deltas=True)
    for utt in data.utts[::10]:
        x = load(utt)
        hyp, lattice = decoder.decode(utt, gmm_log_likelihoods(model.am, x))
        _, _, words, _ = khg.decode_utterance_lattice_faster(
            decoder=reference, decodable=khg.DecodableAmDiagGmmScaled(model.am, model.khg_trans_model, x, 0.083333),
            trans_model=model.khg_trans_model, utt=utt, allow_partial=True)
        assert hyp.word_ids == list(words), utt
        assert lattice.count("\n") > 10
    with pytest.raises(ValueError, match="utterance bad: log-likelihoods have shape"):
        decoder.decode("bad", np.zeros((5, 3), np.float32))


def test_the_lattice_always_holds_the_decoders_best_path(system):
    """kaldi-decoder's LatticeSimpleDecoder prunes differently from Kaldi's LatticeFasterDecoder and
    at a narrow beam loses the 1-best (6 of 100 here at beam 4); Kaldi's lattices always hold it, so
    the lattice search widens its beam until its best path has the 1-best's words."""
    model = GmmModel.read(str(system.mono / "final.mdl"), str(system.mono / "tree"))
    decoder = MappedDecoder(load_graph(str(system.graph)), model.khg_trans_model,
                            DecodeOptions(acoustic_scale=0.083333, beam=4.0, lattice_beam=2.0))
    data = DataDir(str(system.test))
    load = feature_loader(data, "", deltas=True)
    widened = 0
    for utt in data.utts:
        hyp, lattice = decoder.decode(utt, gmm_log_likelihoods(model.am, load(utt)))
        best = best_paths(parse_lattice(lattice.splitlines(), utt), [12.0], [0.0])[(12.0, 0.0)]
        assert best == hyp.word_ids, utt
        assert hyp.lattice_beam_search in (0.0, 8.0, 16.0, 32.0)
        widened += hyp.lattice_beam_search > 0
    assert widened >= 1


def test_lattice_best_paths_follow_lm_weight_and_penalty():
    # path A: word 1 then word 2, cheap acoustics, costly graph; path B: word 3, the reverse
    lat = parse_lattice(["0\t1\t5\t1\t4,10", "1\t2\t6\t2\t4,10", "2\t0,0",
                         "0\t3\t7\t3\t1,40", "3\t0,0"], "test")
    paths = best_paths(lat, [1, 10], [0.0, 30.0])
    assert paths[(1, 0.0)] == [1, 2]      # 8 + 20 < 1 + 40
    assert paths[(10, 0.0)] == [3]        # 1 + 4 < 8 + 2
    assert paths[(1, 30.0)] == [3]        # 8 + 20 + 60 > 1 + 40 + 30


def test_compute_wer_counts_like_kaldi():
    refs = {"a": "one two three".split(), "b": "four".split(), "c": "five".split()}
    hyps = {"a": "one three three four".split(), "b": ["four"]}
    r = compute_wer(refs, hyps)
    assert (r.errors, r.words, r.ins, r.dels, r.subs, r.sentences, r.absent) == (2, 4, 1, 0, 1, 2, 1)
    assert r.report() == ("%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ] [PARTIAL]\n%SER 50.00 [ 1 / 2 ]\n"
                          "Scored 2 sentences, 1 not present in hyp.\n")


def test_decode_and_score_command_lines(system, decoded, tmp_path):
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    decode_dir, _ = decoded
    r = subprocess.run(["bash", str(REPO / "local" / "score.sh"), "--min-lmwt", "9", "--max-lmwt", "11",
                        "--word-ins-penalty", "0.0", str(system.test), str(system.graph), str(decode_dir)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"%WER \d+\.\d\d \[ .* \] \S+/wer_(9|10|11)_0\.0\n", r.stdout)
    out = tmp_path / "decode"
    r = subprocess.run(["bash", str(REPO / "steps" / "decode.sh"), "--nj", "1", str(system.graph), str(system.test),
                        str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "final.mdl to exist" in r.stderr  # the model is ../final.mdl of the decode dir
    r = subprocess.run(["bash", str(REPO / "steps" / "decode.sh"), "--nj", "2", "--skip-scoring", "true",
                        "--beam", "10", str(system.graph), str(system.test), str(system.mono / "decode_cli")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert (system.mono / "decode_cli" / "lat.2.gz").is_file()
    assert not (system.mono / "decode_cli" / "wer_10_0.0").exists()


def test_decoding_a_loglikelihood_archive_equals_the_gmm_decode(system, decoded, tmp_path):
    """latgen-faster-mapped on an archive of GMM log-likelihoods gives steps/decode.sh's results."""
    model = GmmModel.read(str(system.mono / "final.mdl"), str(system.mono / "tree"))
    data = DataDir(str(system.test))
    load = feature_loader(data, "", deltas=True)
    write_matrix_table(f"ark:{tmp_path}/loglikes.ark", ((u, gmm_log_likelihoods(model.am, load(u))) for u in data.utts))
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "kaldi_avg.frontend.decode_steps", "mapped", "--acoustic-scale",
                        "0.083333", "--beam", "13", "--lattice-beam", "6", "--max-active", "7000",
                        "--allow-partial", "true", str(system.mono / "final.mdl"), str(system.graph),
                        f"ark:{tmp_path}/loglikes.ark", str(tmp_path / "decode")], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    decode_dir, _ = decoded
    assert (tmp_path / "decode" / "hyp.txt").read_text() == (decode_dir / "hyp.txt").read_text()
    assert (tmp_path / "decode" / "lat.1.gz").is_file()
