"""CMVN against an independent numpy computation and kaldi-native-fbank's port of Kaldi's cmvn.cc."""
import glob
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from kaldi_avg.kaldi.cmvn import CmvnApplier, CmvnError, CmvnOptions, apply_cmvn, compute_cmvn_stats, parse_cmvn_opts
from kaldi_avg.kaldi.datadir import DataDir, utt2spk_to_spk2utt, write_kaldi_map
from kaldi_avg.kaldi.tables import write_matrix_table

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is the CMVN reference")
kio = pytest.importorskip("kaldi_native_io", reason="kaldi-native-io reads the stats as Kaldi would")

FSDD = "/work/shared/corpora/fsdd/recordings"


def mfcc_of(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = rate
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 23
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(rate, samples.tolist())
    mfcc.input_finished()
    return np.array([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)], dtype=np.float32)


@pytest.fixture(scope="module")
def speech():
    """MFCCs of three real recordings (two speakers); random features if the corpus is absent."""
    paths = sorted(glob.glob(f"{FSDD}/1_george_*.wav"))[:2] + sorted(glob.glob(f"{FSDD}/2_jackson_*.wav"))[:1]
    if len(paths) == 3:
        return {f"{os.path.basename(p).split('_')[1]}-{os.path.basename(p)[:-4]}": mfcc_of(p) for p in paths}
    rng = np.random.default_rng(0)
    return {f"{s}-utt{i}": (rng.standard_normal((40 + i, 13)) * 5 + 3).astype(np.float32)
            for i, s in enumerate(["george", "george", "jackson"])}


def numpy_stats(mats):
    x = np.concatenate(list(mats)).astype(np.float64)
    d = x.shape[1]
    stats = np.zeros((2, d + 1))
    stats[0, :d], stats[1, :d], stats[0, d] = x.sum(0), (x * x).sum(0), len(x)
    return stats


def test_stats_match_numpy_and_knf(speech):
    stats = compute_cmvn_stats(speech.values())
    np.testing.assert_allclose(stats, numpy_stats(speech.values()), rtol=1e-6)
    knf_stats = sum(knf.compute_cmvn_stats(m) for m in speech.values())
    np.testing.assert_allclose(stats[0], knf_stats[0], rtol=1e-12)
    # Kaldi's AccCmvnStats squares in float (knf squares in double): float rounding only.
    np.testing.assert_allclose(stats[1], knf_stats[1], rtol=1e-7)
    assert stats.dtype == np.float64 and stats.shape == (2, 14)


@pytest.mark.parametrize("norm_vars", [False, True])
def test_apply_matches_numpy_and_knf(speech, norm_vars):
    stats = compute_cmvn_stats(speech.values())
    mean = stats[0, :-1] / stats[0, -1]
    std = np.sqrt(stats[1, :-1] / stats[0, -1] - mean ** 2)
    for feats in speech.values():
        ours = apply_cmvn(feats, stats, norm_means=True, norm_vars=norm_vars)
        assert ours.dtype == np.float32
        expected = (feats - mean) / std if norm_vars else feats - mean
        np.testing.assert_allclose(ours, expected, atol=1e-4 if norm_vars else 1e-3)
        theirs = knf.apply_cmvn(stats, knf.CmvnOptions(norm_vars=norm_vars), feats)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_apply_edge_cases():
    feats = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    stats = compute_cmvn_stats([feats])
    np.testing.assert_array_equal(apply_cmvn(feats, stats, norm_means=False), feats)
    # constant column: variance floored to 1e-20 instead of dividing by zero
    out = apply_cmvn(feats, stats, norm_vars=True)
    assert np.all(np.isfinite(out)) and np.allclose(out[:, 0], [-1, 1]) and np.allclose(out[:, 1], 0)
    with pytest.raises(CmvnError, match="count = 0.5"):
        apply_cmvn(feats, stats * 0.25)
    with pytest.raises(CmvnError, match="dim mismatch"):
        apply_cmvn(feats[:, :1], stats)
    with pytest.raises(CmvnError, match="needs mean normalization"):
        apply_cmvn(feats, stats, norm_means=False, norm_vars=True)


@pytest.mark.parametrize("text,means,vars_", [
    ("", True, False), ("\n", True, False), ("--norm-vars=true", True, True),
    ("--norm-means=false", False, False), ("--norm-vars --norm-means=true\n", True, True),
    ("--norm-vars=false --norm-means=False", False, False),
])
def test_parse_cmvn_opts(text, means, vars_):
    opts = parse_cmvn_opts(text)
    assert (opts.norm_means, opts.norm_vars) == (means, vars_)
    assert parse_cmvn_opts(opts.to_text()) == opts


@pytest.mark.parametrize("text,message", [
    ("--reverse=true", "unsupported option '--reverse=true'"),
    ("--utt2spk=ark:x", "unsupported option"),
    ("--norm-vars=yes", "must be true or false"),
    ("--norm-means=false --norm-vars=true", "needs --norm-means=true"),
])
def test_parse_cmvn_opts_rejects(text, message):
    with pytest.raises(CmvnError, match=message):
        parse_cmvn_opts(text)


def make_dir(path, speech, per_utt=False):
    os.makedirs(path)
    utt2spk = {u: u.split("-")[0] for u in speech}
    write_kaldi_map(f"{path}/utt2spk", utt2spk)
    write_kaldi_map(f"{path}/spk2utt", utt2spk_to_spk2utt(utt2spk))
    if per_utt:
        stats = {u: compute_cmvn_stats([m]) for u, m in speech.items()}
    else:
        stats = {s: compute_cmvn_stats(speech[u] for u in utts)
                 for s, utts in utt2spk_to_spk2utt(utt2spk).items()}
    write_matrix_table(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp", dict(sorted(stats.items())))
    return DataDir(path)


@pytest.mark.parametrize("per_utt", [False, True])
def test_applier_per_speaker_or_utterance(tmp_path, speech, per_utt):
    data = make_dir(str(tmp_path / "d"), speech, per_utt)
    applier = CmvnApplier(data, "--norm-vars=true")
    assert applier.per_speaker is not per_utt
    kaldi_stats = kio.RandomAccessDoubleMatrixReader(f"scp:{data.file('cmvn.scp')}")
    for utt, feats in speech.items():
        key = utt if per_utt else utt.split("-")[0]
        expected = knf.apply_cmvn(np.array(kaldi_stats[key]), knf.CmvnOptions(norm_vars=True), feats)
        np.testing.assert_allclose(applier(utt, feats), expected, rtol=1e-6, atol=1e-6)


def test_applier_without_normalization_needs_no_stats(tmp_path, speech):
    os.makedirs(tmp_path / "d")
    write_kaldi_map(f"{tmp_path}/d/utt2spk", {u: "s" for u in speech})
    applier = CmvnApplier(str(tmp_path / "d"), CmvnOptions(norm_means=False))
    utt, feats = next(iter(speech.items()))
    np.testing.assert_array_equal(applier(utt, feats), feats)
    with pytest.raises(CmvnError, match=r"cmvn\.scp: missing"):
        CmvnApplier(str(tmp_path / "d"), "")


def test_applier_reports_missing_stats(tmp_path, speech):
    data = make_dir(str(tmp_path / "d"), speech)
    lines = Path(data.file("cmvn.scp")).read_text().splitlines(keepends=True)
    with open(data.file("cmvn.scp"), "w") as f:
        f.writelines(lines[:1])
    with pytest.raises(CmvnError, match=r"no stats for 1 speaker\(s\) of utt2spk, e.g. \['jackson'\]"):
        CmvnApplier(DataDir(data.path))
    with pytest.raises(CmvnError, match="no speaker for utterance 'ghost'"):
        CmvnApplier(make_dir(str(tmp_path / "e"), speech))("ghost", next(iter(speech.values())))
