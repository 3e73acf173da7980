"""Data dirs and dict dirs for the digit corpora; FSDD preparation; the utils/*.sh tools' logic."""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from kaldi_avg.frontend import dataprep as D
from kaldi_avg.frontend.fsdd import prepare_fsdd
from kaldi_avg.kaldi.datadir import DataDir, DataDirError, read_kaldi_map

REPO = Path(__file__).resolve().parents[2]
FSDD_DIR = Path(os.environ.get("FSDD_DIR", REPO.parent / "shared" / "corpora" / "fsdd"))


def _utts(*spec):
    return [D.Utterance(u, s, f"/w/{u}.wav", tuple(words.split())) for u, s, words in spec]


def test_write_data_dir_sorts_and_derives_spk2utt(tmp_path):
    n = D.write_data_dir(str(tmp_path), _utts(("b-2", "b", "one two"), ("a-1", "a", "nine"), ("b-1", "b", "zero")))
    assert n == 3
    assert (tmp_path / "utt2spk").read_text() == "a-1 a\nb-1 b\nb-2 b\n"
    assert (tmp_path / "spk2utt").read_text() == "a a-1\nb b-1 b-2\n"
    assert (tmp_path / "text").read_text() == "a-1 nine\nb-1 zero\nb-2 one two\n"
    assert (tmp_path / "wav.scp").read_text().splitlines()[0] == "a-1 /w/a-1.wav"
    DataDir(str(tmp_path)).validate(no_feats=True)


@pytest.mark.parametrize("spec, msg", [
    ((("x-1", "y", "one"),), "not prefixed"),
    ((("a-1", "a", "one"), ("a-1", "a", "two")), "duplicate"),
    ((("a 1", "a", "one"),), "whitespace"),
    ((), "no utterances"),
])
def test_write_data_dir_rejects_bad_ids(tmp_path, spec, msg):
    with pytest.raises(D.DataPrepError, match=msg):
        D.write_data_dir(str(tmp_path), _utts(*spec))


def test_dict_dir_for_a_subset_and_unknown_words(tmp_path):
    words = D.write_dict_dir(str(tmp_path / "dict"), {"two", "eight", "oh"})
    assert words == ["eight", "oh", "two"]
    assert (tmp_path / "dict" / "lexicon.txt").read_text() == "<unk> SPN\neight EY T\noh OW\ntwo T UW\n"
    assert (tmp_path / "dict" / "nonsilence_phones.txt").read_text().split() == ["EY", "OW", "T", "UW"]
    text = tmp_path / "text"
    text.write_text("u-1 two banana\n")
    assert D.main(["prepare-dict", str(tmp_path / "d2"), str(text)]) == 1
    with pytest.raises(D.DataPrepError, match="banana"):
        D.write_dict_dir(str(tmp_path / "d3"), D.read_text_words(str(text)))


def _fake_fsdd(root: Path) -> Path:
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for name in ["0_george_0.wav", "0_george_12.wav", "7_jackson_3.wav", "3_lucas_1.wav", "9_lucas_40.wav"]:
        with wave.open(str(rec / name), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(np.zeros(800, dtype="<i2").tobytes())
    (rec / "notes.txt").write_text("not a recording")
    (rec / "x_george_1.wav").write_bytes(b"")
    return root


def test_fsdd_layout(tmp_path):
    counts = prepare_fsdd(str(_fake_fsdd(tmp_path / "fsdd")), str(tmp_path / "data"))
    assert counts == {"train": 3, "test": 2, "skipped": 2}
    train, test = DataDir(str(tmp_path / "data" / "train")), DataDir(str(tmp_path / "data" / "test"))
    assert train.text == {"george-0-00": "zero", "george-0-12": "zero", "jackson-7-03": "seven"}
    assert test.utt2spk == {"lucas-3-01": "lucas", "lucas-9-40": "lucas"}
    assert test.wav_scp["lucas-9-40"] == str(tmp_path / "fsdd" / "recordings" / "9_lucas_40.wav")
    for d in (train, test):
        d.validate(no_feats=True)
    # the recordings folder itself is accepted too
    assert prepare_fsdd(str(tmp_path / "fsdd" / "recordings"), str(tmp_path / "d2"))["train"] == 3
    with pytest.raises(D.DataPrepError, match="nobody"):
        prepare_fsdd(str(tmp_path / "fsdd"), str(tmp_path / "d3"), ("nobody",))
    with pytest.raises(D.DataPrepError, match="no FSDD recordings"):
        prepare_fsdd(str(tmp_path), str(tmp_path / "d4"))


@pytest.mark.skipif(not (FSDD_DIR / "recordings").is_dir(), reason=f"FSDD not found at {FSDD_DIR} (set FSDD_DIR)")
def test_real_fsdd_split(tmp_path):
    kaldi_native_io = pytest.importorskip("kaldi_native_io")
    counts = prepare_fsdd(str(FSDD_DIR), str(tmp_path))
    assert (counts["train"], counts["test"]) == (2500, 500)
    train = DataDir(str(tmp_path / "train"))
    assert sorted(train.spk2utt) == ["george", "jackson", "nicolas", "theo", "yweweler"]
    assert list(DataDir(str(tmp_path / "test")).spk2utt) == ["lucas"]
    train.validate(no_feats=True)
    assert set(train.text.values()) == set(D.DIGIT_WORDS)
    # Kaldi's wave reader takes the first recordings of every speaker
    first = {}
    for utt, rx in train.wav_scp.items():
        first.setdefault(train.utt2spk[utt], (utt, rx))
    scp = tmp_path / "some.scp"
    scp.write_text("".join(f"{u} {rx}\n" for u, rx in first.values()))
    infos = [(info.sample_freq, info.num_channels)    # read each while the reader holds it
             for _, info in kaldi_native_io.SequentialWaveInfoReader(f"scp:{scp}")]
    assert infos == [(8000, 1)] * 5


def _data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    D.write_data_dir(str(d), _utts(("a-1", "a", "one"), ("a-2", "a", "two"), ("b-1", "b", "three"),
                                   ("c-1", "c", "four")))
    (d / "feats.scp").write_text("a-1 f.ark:1\nb-1 f.ark:2\nc-1 f.ark:3\nz-9 f.ark:4\n")
    (d / "cmvn.scp").write_text("a c.ark:1\nb c.ark:2\n")
    (d / "utt2num_frames").write_text("a-2 5\na-1 7\na-1 7\nb-1 3\nc-1 9\n")
    return d


def test_fix_data_dir(tmp_path):
    d = _data_dir(tmp_path)
    report = D.fix_data_dir(str(d))
    joined = "\n".join(report)
    assert "utt2num_frames: dropped 1 duplicate" in joined
    assert "cmvn.scp: no entry for 1 speaker(s), e.g. ['c']" in joined
    assert "feats.scp: no entry for 1 utterance(s), e.g. ['a-2']" in joined
    assert report[-1] == "kept 2 utterances out of 4"
    data = DataDir(str(d))
    assert data.utt2spk == {"a-1": "a", "b-1": "b"}
    assert read_kaldi_map(str(d / "utt2num_frames")) == {"a-1": "7", "b-1": "3"}
    assert (d / "spk2utt").read_text() == "a a-1\nb b-1\n"
    data.validate()
    assert (d / ".backup" / "feats.scp").read_text().endswith("z-9 f.ark:4\n")
    assert D.fix_data_dir(str(d))[-1] == "kept 2 utterances out of 2"


def test_split_scp_and_split_data(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"u{i} x{i}\n" for i in range(7)))
    outs = [str(tmp_path / f"p{j}") for j in range(3)]
    D.split_scp(str(scp), outs)
    parts = [Path(o).read_text().splitlines() for o in outs]
    assert [len(p) for p in parts] == [3, 2, 2] and sum(parts, []) == scp.read_text().splitlines()
    with pytest.raises(DataDirError):
        D.split_scp(str(scp), [str(tmp_path / f"q{j}") for j in range(8)])
    d = _data_dir(tmp_path)
    D.fix_data_dir(str(d))
    assert D.main(["split-data", str(d), "2"]) == 0
    assert (d / "split2" / "2" / "utt2spk").read_text() == "b-1 b\n"
    assert D.main(["split-data", str(d), "3"]) == 1        # two speakers cannot make three parts


def test_validate_and_spk2utt_commands(tmp_path, capsys):
    d = _data_dir(tmp_path)
    assert D.main(["validate-data-dir", "--no-feats", str(d)]) == 1     # feats.scp has z-9
    assert "feats.scp" in capsys.readouterr().err
    (d / "feats.scp").unlink()
    (d / "cmvn.scp").unlink()
    (d / "utt2num_frames").unlink()
    assert D.main(["validate-data-dir", "--no-feats", "--non-print", str(d)]) == 0
    assert D.main(["utt2spk-to-spk2utt", str(d / "utt2spk")]) == 0
    assert capsys.readouterr().out == (d / "spk2utt").read_text()
