"""Data directories: lazy reading, validate_data_dir.sh checks, split_data.sh."""
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest

import kaldi_avg.kaldi.datadir as datadir_module
from kaldi_avg.kaldi.datadir import (
    DataDir,
    DataDirError,
    feat_to_len,
    split_data,
    utt2spk_to_spk2utt,
    write_kaldi_map,
)
from kaldi_avg.kaldi.tables import write_matrix_table

kio = pytest.importorskip("kaldi_native_io", reason="kaldi-native-io reads our feats.scp as Kaldi would")

# Speakers with 3, 1, 4, 2, 2 utterances (12 in all).
SPEAKERS = {"spkA": 3, "spkB": 1, "spkC": 4, "spkD": 2, "spkE": 2}


def make_datadir(path, with_num_frames=True):
    """A complete, valid data directory with (random) features and per-speaker CMVN stats."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(0)
    utt2spk = {f"{spk}-u{i}": spk for spk, n in SPEAKERS.items() for i in range(n)}
    feats = {utt: rng.standard_normal((10 + len(utt) + i, 4)).astype(np.float32)
             for i, utt in enumerate(sorted(utt2spk))}
    write_kaldi_map(f"{path}/utt2spk", utt2spk)
    write_kaldi_map(f"{path}/spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_kaldi_map(f"{path}/text", {u: "ONE TWO" for u in utt2spk})
    write_kaldi_map(f"{path}/wav.scp", {u: f"/data/{u}.wav" for u in utt2spk})
    write_kaldi_map(f"{path}/utt2dur", {u: 0.5 for u in utt2spk})
    if with_num_frames:
        write_kaldi_map(f"{path}/utt2num_frames", {u: m.shape[0] for u, m in feats.items()})
    write_matrix_table(f"ark,scp:{path}/feats.ark,{path}/feats.scp", dict(sorted(feats.items())),
                       compress=True)
    cmvn = {spk: np.ones((2, 5)) * 7 for spk in SPEAKERS}
    write_matrix_table(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp", cmvn)
    return DataDir(path), feats


def test_reads_files_lazily_and_validates(tmp_path):
    data, feats = make_datadir(str(tmp_path / "train"))
    data.validate()
    assert data.utts == sorted(feats)
    assert data.spk2utt["spkB"] == ["spkB-u0"]
    assert data.text["spkA-u1"] == "ONE TWO"
    assert data.utt2dur["spkC-u3"] == 0.5
    assert data.wav_scp["spkE-u1"] == "/data/spkE-u1.wav"
    for utt, m in feats.items():
        assert data.num_frames(utt) == m.shape[0]
    theirs = kio.RandomAccessFloatMatrixReader(f"scp:{tmp_path}/train/feats.scp")
    np.testing.assert_allclose(data.feats["spkC-u2"], np.array(theirs["spkC-u2"]), atol=1e-6)
    np.testing.assert_array_equal(data.cmvn["spkD"], np.ones((2, 5)) * 7)


def test_num_frames_from_feature_headers_without_utt2num_frames(tmp_path):
    data, feats = make_datadir(str(tmp_path / "d"), with_num_frames=False)
    assert data.utt2num_frames is None
    assert {u: data.num_frames(u) for u in feats} == {u: m.shape[0] for u, m in feats.items()}
    with pytest.raises(KeyError, match="nope"):
        data.num_frames("nope")


def _mixed_scp(path) -> str:
    """feats.scp with CM, CM2, FM entries, a row range, a text archive entry and a pipe."""
    rng = np.random.default_rng(1)
    mats = {f"u{i}": rng.standard_normal((n, 3)).astype(np.float32) for i, n in enumerate((5, 40, 17, 1))}
    write_matrix_table(f"ark,scp:{path}/cm.ark,{path}/cm.scp", {"u0": mats["u0"], "u1": mats["u1"]}, compress=True)
    write_matrix_table(f"ark,scp:{path}/fm.ark,{path}/fm.scp", {"u2": mats["u2"]})
    write_matrix_table(f"ark,t,scp:{path}/t.ark,{path}/t.scp", {"u3": mats["u3"]})
    lines = open(f"{path}/cm.scp").read() + open(f"{path}/fm.scp").read() + open(f"{path}/t.scp").read()
    lines += f"u4 {path}/fm.ark:{lines.split()[5].rsplit(':', 1)[1]}[3:9]\n"  # rows 3..9 of u2: 7 rows
    u0_offset = int(lines.split()[1].rsplit(":", 1)[1])
    lines += f"u5 tail -c +{u0_offset + 1} {path}/cm.ark |\n"  # a pipe whose output starts with u0's matrix
    with open(f"{path}/feats.scp", "w") as f:
        f.write(lines)
    return f"{path}/feats.scp"


def test_feat_to_len_agrees_with_kaldi_readers(tmp_path):
    scp = _mixed_scp(str(tmp_path))
    ours = feat_to_len(scp)
    theirs = {k: m.shape[0] for k, m in kaldiio.load_scp(scp).items()}
    assert ours == theirs == {"u0": 5, "u1": 40, "u2": 17, "u3": 1, "u4": 7, "u5": 5}
    reader = kio.RandomAccessFloatMatrixReader(f"scp:{scp}")
    assert {k: np.array(reader[k]).shape[0] for k in ours} == ours


def test_lengths_written_once_to_utt2num_frames(tmp_path, monkeypatch):
    data, feats = make_datadir(str(tmp_path / "d"), with_num_frames=False)
    assert data.lengths == {u: m.shape[0] for u, m in feats.items()}
    again = DataDir(data.path)
    assert again.utt2num_frames == data.lengths  # the file Kaldi's get_utt2num_frames.sh writes
    again.validate()
    leftovers = [n for n in os.listdir(data.path) if n.startswith(".tmp")]
    assert leftovers == []
    monkeypatch.setattr(datadir_module, "feat_to_len", lambda _: pytest.fail("recomputed"))
    assert DataDir(data.path).lengths == data.lengths


def test_lengths_of_a_read_only_dir_stay_in_memory(tmp_path, monkeypatch, caplog):
    data, feats = make_datadir(str(tmp_path / "ro"), with_num_frames=False)

    def refuse(path, mapping):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(datadir_module, "write_kaldi_map", refuse)
    for _ in range(2):
        d = DataDir(data.path)
        assert d.num_frames("spkC-u2") == feats["spkC-u2"].shape[0]
    assert not d.has("utt2num_frames")
    said = [r.getMessage() for r in caplog.records if "utt2num_frames" in r.getMessage()]
    assert len(said) == 1 and "kept in memory" in said[0] and "Permission denied" in said[0]


def test_feat_to_len_names_a_bad_entry(tmp_path):
    data, _ = make_datadir(str(tmp_path / "d"), with_num_frames=False)
    with open(data.file("feats.scp"), "a") as f:
        f.write("spkZ-u9 /nonexistent/feats.ark:12\n")
    with pytest.raises(DataDirError, match=r"feats.scp: entry 'spkZ-u9'"):
        feat_to_len(data.file("feats.scp"))


def test_write_kaldi_map_sorts_in_c_order(tmp_path):
    write_kaldi_map(f"{tmp_path}/m", {"b": "x y", "B": ["1", 2], "a_": 3, "a": ""})
    assert (tmp_path / "m").read_text() == "B 1 2\na\na_ 3\nb x y\n"
    assert os.listdir(tmp_path) == ["m"]
    assert utt2spk_to_spk2utt({"s2-b": "s2", "s1-a": "s1", "s2-a": "s2"}) == {
        "s1": ["s1-a"], "s2": ["s2-a", "s2-b"]}


def _edit(path, transform):
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    with open(path, "w") as f:
        f.write("".join(transform(lines)))


@pytest.mark.parametrize("name,transform,message", [
    ("utt2spk", lambda ls: [ls[0], ls[2], ls[1]] + ls[3:], r"utt2spk:3: not sorted"),
    ("utt2spk", lambda ls: ls[:2] + [ls[1]] + ls[2:], r"utt2spk:3: duplicate key 'spkA-u1'"),
    ("utt2spk", lambda ls: ls[:3] + ["spkB-u0 spkB extra\n"] + ls[4:], r"utt2spk:4: expected '<utt> <spk>'"),
    ("spk2utt", lambda ls: [ls[0].replace(" spkA-u2", "")] + ls[1:], r"spk2utt: spk2utt does not list 1"),
    ("spk2utt", lambda ls: ls[:1] + [ls[1].rstrip("\n") + " spkA-u2\n"] + ls[2:], r"spk2utt:2: utterance 'spkA-u2'"),
    ("feats.scp", lambda ls: ls + ["zzz-u0 feats.ark:3\n"], r"feats.scp:13: key 'zzz-u0' is not in utt2spk"),
    ("feats.scp", lambda ls: ls[1:], r"feats.scp: lacks 1 key\(s\) of utt2spk, e.g. \['spkA-u0'\]"),
    ("text", lambda ls: ls[:6] + ["spkC-u2 ONE <s> TWO\n"] + ls[7:], r"text:7: illegal symbol '<s>'"),
    ("text", lambda ls: ls[:-1] + [ls[-1].rstrip("\n")], r"text:12: last line has no newline"),
    ("utt2num_frames", lambda ls: ls[:1] + ["spkA-u1 0\n"] + ls[2:], r"utt2num_frames:2: bad value '0'"),
    ("utt2dur", lambda ls: ls[:2] + ["\n"] + ls[2:], r"utt2dur:3: empty line"),
    ("cmvn.scp", lambda ls: ls[:2] + ls[3:], r"cmvn.scp: lacks 1 key\(s\) of spk2utt"),
    ("wav.scp", lambda ls: ls[:1] + ["spkA-u1 ~/x.wav\n"] + ls[2:], r"wav.scp:2: do not use '~'"),
])
def test_validation_errors_name_file_and_line(tmp_path, name, transform, message):
    data, _ = make_datadir(str(tmp_path / "d"))
    _edit(data.file(name), transform)
    with pytest.raises(DataDirError, match=message):
        DataDir(data.path).validate()


def test_speaker_sort_order_is_checked_unless_disabled(tmp_path):
    data, _ = make_datadir(str(tmp_path / "d"))
    _edit(data.file("utt2spk"), lambda ls: [ls[0].replace("spkA\n", "spkZ\n")] + ls[1:])
    _edit(data.file("spk2utt"), lambda ls: [ls[0].replace(" spkA-u0", "")] + ls[1:] + ["spkZ spkA-u0\n"])
    os.remove(data.file("cmvn.scp"))
    with pytest.raises(DataDirError, match=r"utt2spk:2: not sorted by speaker"):
        DataDir(data.path).validate()
    DataDir(data.path).validate(no_spk_sort=True)


def test_optional_files_can_be_waived(tmp_path):
    data, _ = make_datadir(str(tmp_path / "d"))
    for name in ("text", "wav.scp", "feats.scp"):
        os.remove(data.file(name))
    with pytest.raises(DataDirError, match="text: missing"):
        DataDir(data.path).validate()
    DataDir(data.path).validate(no_feats=True, no_text=True, no_wav=True)


def test_split_keeps_speakers_whole_and_balances_utterances(tmp_path):
    data, feats = make_datadir(str(tmp_path / "d"))
    parts = split_data(data.path, 3)
    assert [p.path for p in parts] == [f"{data.path}/split3/{j}" for j in (1, 2, 3)]
    # 12 utterances: first spread 5 speakers 2/2/1 (A,B | C,D | E = 4/6/2 utts), then
    # boundary speaker D moves to the last part: 4/4/4.
    assert [sorted(p.spk2utt) for p in parts] == [["spkA", "spkB"], ["spkC"], ["spkD", "spkE"]]
    seen = []
    for part in parts:
        part.validate()
        seen += part.utts
        assert set(part.cmvn) == set(part.spk2utt)
        for utt in part.utts:
            np.testing.assert_array_equal(part.feats[utt], data.feats[utt])
            assert part.num_frames(utt) == feats[utt].shape[0]
    assert sorted(seen) == data.utts
    with pytest.raises(DataDirError, match="cannot split 5 speaker"):
        split_data(data, 6)


def test_split_into_one_part_copies_everything(tmp_path):
    data, _ = make_datadir(str(tmp_path / "d"))
    (part,) = split_data(data, 1)
    for name in ("utt2spk", "spk2utt", "text", "wav.scp", "feats.scp", "cmvn.scp", "utt2dur",
                 "utt2num_frames"):
        assert Path(part.file(name)).read_bytes() == Path(data.file(name)).read_bytes(), name
