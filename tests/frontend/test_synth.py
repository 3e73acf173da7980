"""The embedded espeak-ng corpus: resampler, determinism, speaker split, audio, data dirs."""
from __future__ import annotations

import os
import wave

import numpy as np
import pytest

from kaldi_avg.frontend.dataprep import DIGIT_LEXICON, read_text_words, write_dict_dir
from kaldi_avg.frontend.resample import resample
from kaldi_avg.frontend.synth import (
    STANDARD_VARIANTS,
    SynthError,
    SynthOptions,
    _fork_each,
    plan_corpus,
    synthesize_corpus,
)
from kaldi_avg.kaldi.datadir import DataDir

SMALL = SynthOptions(num_train_speakers=4, num_test_speakers=2, num_train_utts=8, num_test_utts=4)


def _tone_gain_db(freq: float, orig: int = 22050, new: int = 8000) -> float:
    t = np.arange(orig) / orig
    y = resample(np.sin(2 * np.pi * freq * t), orig, new)[1000:-1000]   # away from the edges
    return 20 * np.log10(np.sqrt(2 * np.mean(y ** 2)) + 1e-30)


@pytest.mark.parametrize("freq", [100.0, 1000.0, 2500.0, 3300.0])
def test_resampler_passband_is_flat(freq):
    assert abs(_tone_gain_db(freq)) < 0.01


@pytest.mark.parametrize("freq", [4100.0, 5000.0, 7000.0, 10000.0])
def test_resampler_rejects_what_would_alias(freq):
    # Above 4 kHz a tone folds back into the 8 kHz band; np.interp lets it through at ~0 dB.
    assert _tone_gain_db(freq) < -60.0
    t = np.arange(22050) / 22050
    naive = np.interp(np.arange(8000) / 8000, t, np.sin(2 * np.pi * freq * t))
    assert 20 * np.log10(np.sqrt(2 * np.mean(naive ** 2))) > -10.0


def test_resampler_length_timing_and_dc():
    x = np.ones(22050 * 2 + 7)
    y = resample(x, 22050, 8000)
    assert len(y) == -(-len(x) * 8000 // 22050)
    np.testing.assert_allclose(y[200:-200], 1.0, atol=1e-9)
    # a delayed impulse stays where it was in time (zero-phase filter)
    imp = np.zeros(22050)
    imp[11025] = 1.0
    assert int(np.argmax(resample(imp, 22050, 8000))) == 4000
    assert np.array_equal(resample(np.arange(5.0), 8000, 8000), np.arange(5.0))
    with pytest.raises(ValueError):
        resample(np.zeros((2, 3)), 22050, 8000)


def test_plan_is_deterministic_and_speaker_disjoint():
    plan = plan_corpus(SMALL)
    assert plan == plan_corpus(SMALL)
    assert plan != plan_corpus(SynthOptions(**{**SMALL.__dict__, "seed": 1}))
    train = {u.speaker for u in plan["train"]}
    test = {u.speaker for u in plan["test"]}
    assert len(train) == 4 and len(test) == 2
    assert not {s.speaker_id for s in train} & {s.speaker_id for s in test}
    assert not {s.variant for s in train} & {s.variant for s in test}, "test voices must be unseen"
    assert {s.variant for s in test} <= set(STANDARD_VARIANTS)
    for u in plan["train"] + plan["test"]:
        assert u.utt_id.startswith(u.speaker.speaker_id + "-")
        assert 1 <= len(u.words) <= 7 and set(u.words) <= set(DIGIT_LEXICON) - {"oh"}
    # more utterances extend the corpus without changing the earlier ones
    bigger = plan_corpus(SynthOptions(**{**SMALL.__dict__, "num_train_utts": 12}))
    assert bigger["train"][:4] == plan["train"][:4]


def test_oh_and_bad_options():
    plan = plan_corpus(SynthOptions(**{**SMALL.__dict__, "oh_prob": 1.0, "min_digits": 7}))
    words = [w for u in plan["train"] for w in u.words]
    assert "oh" in words and "zero" not in words
    for bad in ({"num_test_speakers": 0}, {"min_digits": 0}, {"oh_prob": 2.0},
                {"snr_min": 50.0}, {"num_train_utts": 2}, {"variants": ("m1", "m2")},
                {"test_variants": ("m1",)}):
        with pytest.raises(ValueError):
            plan_corpus(SynthOptions(**{**SMALL.__dict__, **bad}))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    seconds = synthesize_corpus(str(root / "corpus"), str(root / "data"), SMALL, nj=2, progress=False)
    return root, seconds


def _read_wav(path):
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def test_corpus_audio_is_sane(corpus):
    root, seconds = corpus
    data = DataDir(str(root / "data" / "train"))
    text = data.text
    for utt, path in data.wav_scp.items():
        x = _read_wav(path)
        n_words = len(text[utt].split())
        # 0.1-0.7 s of padding plus roughly 0.2-0.8 s per digit word
        assert 0.3 + 0.15 * n_words < len(x) / 8000 < 1.2 + 0.9 * n_words, utt
        rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)) / 32768)
        assert -45 < rms_db < -6, (utt, rms_db)
        assert np.abs(x).max() < 32767, f"{utt} clips"
    assert seconds["train"] > 8 and seconds["test"] > 4


def test_corpus_is_deterministic_for_any_nj(corpus, tmp_path):
    root, _ = corpus
    synthesize_corpus(str(tmp_path / "corpus"), str(tmp_path / "data"), SMALL, nj=1, progress=False)
    for split in ("train", "test"):
        names = sorted(os.listdir(root / "corpus" / split))
        assert names == sorted(os.listdir(tmp_path / "corpus" / split))
        for name in names:
            a = (root / "corpus" / split / name).read_bytes()
            assert a == (tmp_path / "corpus" / split / name).read_bytes(), name
        assert ((root / "data" / split / "text").read_text()
                == (tmp_path / "data" / split / "text").read_text())


def test_data_dirs_validate_and_are_readable_by_kaldi(corpus):
    kaldi_native_io = pytest.importorskip("kaldi_native_io")
    root, _ = corpus
    for split in ("train", "test"):
        d = DataDir(str(root / "data" / split))
        d.validate(no_feats=True)
        assert list(d.utt2spk) == sorted(d.utt2spk)
        n = 0
        for _utt, wav in kaldi_native_io.SequentialWaveReader(f"scp:{d.file('wav.scp')}"):
            assert wav.sample_freq == 8000 and wav.data.numpy().shape[0] == 1
            n += 1
        assert n == len(d.utt2spk)
    train_spk = set(DataDir(str(root / "data" / "train")).spk2utt)
    test_spk = set(DataDir(str(root / "data" / "test")).spk2utt)
    assert train_spk and test_spk and not train_spk & test_spk
    speakers = (root / "corpus" / "speakers.txt").read_text().split("\n")[1:-1]
    assert {line.split()[0] for line in speakers} == train_spk | test_spk


def test_dict_matches_the_text(corpus, tmp_path):
    root, _ = corpus
    words = read_text_words(str(root / "data" / "train" / "text")) | \
        read_text_words(str(root / "data" / "test" / "text"))
    write_dict_dir(str(tmp_path), words)
    lexicon = [line.split() for line in (tmp_path / "lexicon.txt").read_text().splitlines()]
    assert {e[0] for e in lexicon} == words | {"<unk>"}
    nonsil = (tmp_path / "nonsilence_phones.txt").read_text().split()
    sil = (tmp_path / "silence_phones.txt").read_text().split()
    assert sil == ["SIL", "SPN"] and (tmp_path / "optional_silence.txt").read_text() == "SIL\n"
    assert {p for e in lexicon for p in e[1:]} == set(nonsil) | {"SPN"}
    assert not set(nonsil) & set(sil)
    questions = [q.split() for q in (tmp_path / "extra_questions.txt").read_text().splitlines()]
    assert questions == [sil, nonsil]


def test_worker_errors_reach_the_parent():
    assert sorted(_fork_each(range(5), lambda i: i * i, 2)) == [0, 1, 4, 9, 16]
    with pytest.raises(SynthError, match="ZeroDivisionError"):
        list(_fork_each(range(4), lambda i: 1 / (i - 2), 2))
