"""Monophone GMM training (train_mono.sh) and alignment (align_si.sh) on FSDD: the Kaldi files they
write, read back with kaldi-native-io and khg, and alignments that spell the transcripts."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys

import kaldi_hmm_gmm as khg
import numpy as np
import pytest

from kaldi_avg.frontend.dataprep import DIGIT_LEXICON, Utterance, write_data_dir
from kaldi_avg.frontend.gmm_align import align_si, kaldi_string_hash
from kaldi_avg.frontend.gmm_model import GmmModel
from kaldi_avg.frontend.gmm_train import mix_up, target_num_gauss
from kaldi_avg.frontend.hmm import read_tree
from kaldi_avg.kaldi.alignment import read_transition_ids
from kaldi_avg.kaldi.binary import KaldiReader
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.transition import TransitionModel, read_transition_model
from tests.frontend.gmm_system import REPO, gmm_system, make_data_dir, recordings_dir

kaldi_native_io = pytest.importorskip("kaldi_native_io")


@pytest.fixture(scope="module")
def system():
    return gmm_system()


def test_experiment_dir_has_train_mono_files(system):
    d = system.mono
    for name in ("0.mdl", "40.mdl", "final.mdl", "40.occs", "final.occs", "tree", "num_jobs", "cmvn_opts",
                 "phones.txt", "ali.1.gz", "ali.2.gz", "log/init.log", "log/update.0.log", "log/align.0.1.log",
                 "log/align.1.2.log", "log/align.38.1.log", "log/acc.39.2.log", "log/update.39.log"):
        assert (d / name).exists(), name
    assert os.readlink(d / "final.mdl") == "40.mdl"
    assert (d / "num_jobs").read_text() == "2\n"
    assert "# Ended (code 0)" in (d / "log" / "update.39.log").read_text()
    occs = KaldiReader.from_bytes((d / "final.occs").read_bytes()).read_vector()  # gmm-est writes text
    model = GmmModel.read(str(d / "final.mdl"), str(d / "tree"))
    assert occs.shape == (model.am.num_pdfs,) and occs.sum() > 10000
    # Gaussians were mixed up towards --totgauss
    assert 500 < model.am.num_gauss <= 1000


def test_gmm_model_file_round_trips_and_matches_khg(system):
    path = system.mono / "final.mdl"
    data = path.read_bytes()
    model = GmmModel.read(str(path), str(system.mono / "tree"))
    assert model.to_bytes(binary=True) == data
    # the transition model prefix is Kaldi's, and equals khg's own text form of the same model
    tm = read_transition_model(str(path))
    assert tm.to_bytes(binary=False).decode().split()[:40] == str(model.khg_trans_model).split()[:40]
    assert data.startswith(b"\0B" + tm.to_bytes(binary=True))
    rest = data[2 + len(tm.to_bytes(binary=True)):]
    assert rest.startswith(b"<DIMENSION> \x04" + np.int32(39).tobytes() + b"<NUMPDFS> \x04"
                           + np.int32(tm.num_pdfs).tobytes() + b"<DiagGMM> <GCONSTS> FV ")
    # text form reads back to the same likelihoods
    text_path = system.root / "final_text.mdl"
    model.write(str(text_path), binary=False)
    assert text_path.read_bytes().startswith(b"<TransitionModel> \n<Topology> \n")
    again = GmmModel.read(str(text_path), str(system.mono / "tree"))
    x = np.random.default_rng(0).normal(size=39).astype(np.float32)
    for pdf in (0, 7, tm.num_pdfs - 1):
        assert again.am.log_likelihood(pdf, x) == pytest.approx(model.am.log_likelihood(pdf, x), rel=1e-5)


def test_tree_is_a_kaldi_monophone_tree(system):
    data = (system.mono / "tree").read_bytes()
    assert data.startswith(b"\0BContextDependency \x04\x01\x00\x00\x00\x04\x00\x00\x00\x00ToPdf ")
    tree = read_tree(str(system.mono / "tree"))
    tm = read_transition_model(str(system.mono / "final.mdl"))
    assert (tree.context_width, tree.central_position, tree.num_pdfs) == (1, 0, tm.num_pdfs)


def _phones_of(tids, tm: khg.TransitionModel, phone_names):
    """ali-to-phones: one phone per HMM instance, which ends with its transition into the final
    state (training graphs are reordered: self-loops come before the forward transition)."""
    return [phone_names[tm.transition_id_to_phone(int(t))] for t in tids if tm.is_final(int(t))]


def test_alignments_are_kaldi_archives_that_spell_the_transcripts(system):
    model = GmmModel.read(str(system.ali / "final.mdl"), str(system.ali / "tree"))
    names = {i: p for p, i in (line.split() for line in (system.lang / "phones.txt").read_text().splitlines())}
    names = {int(i): p for i, p in names.items()}
    data = DataDir(str(system.train))
    seen = {}
    for job in (1, 2):
        path = system.ali / f"ali.{job}.gz"
        reader = kaldi_native_io.SequentialInt32VectorReader(f"ark:gunzip -c {path}|")
        job_ali = {utt: np.asarray(ali) for utt, ali in reader}
        reader.close()
        ours = read_transition_ids(str(path))
        assert ours.keys() == job_ali.keys()
        assert all(np.array_equal(ours[u], job_ali[u]) for u in ours)
        seen.update(job_ali)
    assert set(seen) == set(data.utts)  # nothing failed on clean data
    for utt, ali in seen.items():
        assert len(ali) == data.feats.shape(utt)[0], utt
        phones = [p for p in _phones_of(ali, model.khg_trans_model, names) if p != "SIL"]
        pron = DIGIT_LEXICON[data.text[utt]].split()
        expected = [pron[0] + "_S"] if len(pron) == 1 else \
            [pron[0] + "_B"] + [p + "_I" for p in pron[1:-1]] + [pron[-1] + "_E"]
        assert phones == expected, utt


def test_alignment_failures_are_counted_and_listed(system, tmp_path, capfd):
    rec = recordings_dir()
    d = make_data_dir(tmp_path / "data", rec, ("george",), (7,))
    # a transcript far too long for its audio cannot be aligned
    utts = [Utterance(u, "george", d.wav_scp[u], tuple(d.text[u].split())) for u in d.utts]
    bad = utts[3].utt_id
    utts[3] = Utterance(bad, "george", utts[3].wav, ("seven",) * 12)
    write_data_dir(d.path, utts)
    alignments = align_si(d.path, str(system.lang), str(system.mono), str(tmp_path / "ali"), nj=1)
    assert bad not in alignments and len(alignments) == 9
    log = (tmp_path / "ali" / "log" / "align.1.log").read_text()
    assert f"Did not successfully decode file {bad}" in log
    assert f"Utterances that failed to align: {bad}" in log and "errors on 1" in log
    assert "1 utterance(s) failed to align" in capfd.readouterr().err
    with gzip.open(tmp_path / "ali" / "ali.1.gz", "rt") as f:
        assert sum(1 for _ in f) == 9


def test_align_si_copies_model_files(system):
    for name in ("final.mdl", "tree", "num_jobs", "cmvn_opts", "phones.txt", "final.occs"):
        assert (system.ali / name).is_file(), name
    assert (system.ali / "final.mdl").read_bytes() == (system.mono / "final.mdl").read_bytes()


def test_kaldi_string_hash_matches_kaldi():
    # StringHasher: h = h * 7853 + c over the bytes, truncated to int32 by align-equal-compiled
    h = 0
    for c in b"utt1":
        h = (h * 7853 + c) % 2**64
    h %= 2**32
    assert kaldi_string_hash("utt1") == (h - 2**32 if h >= 2**31 else h)


def test_train_mono_command_line_errors(tmp_path):
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    r = subprocess.run(["bash", str(REPO / "steps" / "train_mono.sh"), "--nj", "2", str(tmp_path / "nodata"),
                        str(tmp_path / "lang"), str(tmp_path / "exp")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "steps/train_mono.sh:" in r.stderr
    r = subprocess.run(["bash", str(REPO / "steps" / "align_si.sh"), "a", "b"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1 and "usage: steps/align_si.sh" in r.stdout + r.stderr


def test_transition_model_reads_back_with_the_trained_probabilities(system):
    tm = read_transition_model(str(system.mono / "final.mdl"))
    model = GmmModel.read(str(system.mono / "final.mdl"), str(system.mono / "tree"))
    assert np.array_equal(np.asarray(model.khg_trans_model.log_probs, np.float32), tm.log_probs)
    assert isinstance(model.trans_model, TransitionModel)
    assert not np.allclose(tm.log_probs[1:], np.log(0.75)) and np.all(tm.log_probs[1:] <= 0)


def test_mix_up_matches_khg_split_by_count():
    """Our seeded mix-up hands out Gaussians exactly as khg's port of AmDiagGmm::SplitByCount."""
    rng = np.random.default_rng(1)
    occs = rng.uniform(0, 3000, size=40).astype(np.float32)
    occs[5] = 0.0
    dim = 4

    def model():
        am = khg.AmDiagGmm()
        g = khg.DiagGmm(1, dim)
        g.set_invvars_and_means(np.full((1, dim), 2.0, np.float32), np.ones((1, dim), np.float32))
        g.set_weights(np.ones(1, np.float32))
        g.compute_gconsts()
        for _ in range(occs.size):
            am.add_pdf(g)
        return am

    theirs, ours = model(), model()
    theirs.split_by_count(occs, 300, 0.01, 0.25, 20.0)
    mix_up(ours, occs, 300, 0.25, np.random.default_rng(0))
    assert [ours.num_gauss_in_pdf(p) for p in range(occs.size)] == \
           [theirs.num_gauss_in_pdf(p) for p in range(occs.size)]
    assert target_num_gauss(occs, 300, 0.25, 20.0)[5] == 1
    g = ours.get_pdf(int(np.argmax(occs)))
    assert np.asarray(g.weights).sum() == pytest.approx(1.0)
    means = np.asarray(g.means_invvars) / np.asarray(g.inv_vars)
    weights = np.asarray(g.weights)[:, None]
    assert np.allclose((weights * means).sum(axis=0), 1.0, atol=1e-5)  # halves move apart symmetrically
