"""Start-up checks on real-format files written by kaldiio and kaldi-native-io."""
import os

import kaldiio
import numpy as np
import pytest

from kaldi_avg.data import (
    ChunkConfig,
    InputError,
    SkipReport,
    check_alignments,
    check_features,
    check_matrix_scp,
    check_minibatches,
    check_tree,
    load_utterance,
    screen_utterances,
)
from kaldi_avg.data.source import UtteranceSource
from kaldi_avg.kaldi.alignment import match_alignments
from kaldi_avg.kaldi.binary import BINARY_HEADER
from kaldi_avg.kaldi.tables import ArchiveFiles, MatrixTable

khg = pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm writes the reference tree")

# kaldiio's compression methods: 2 = kSpeechFeature (CM), 4 = kTwoByte (CM2), 6 = kOneByte (CM3)
FORMATS = {"FM": (np.float32, None), "DM": (np.float64, None), "CM": (np.float32, 2),
           "CM2": (np.float32, 4), "CM3": (np.float32, 6)}


def write_feats(directory, feats, fmt="FM", name="feats"):
    dtype, method = FORMATS[fmt]
    ark, scp = os.path.join(directory, f"{name}.ark"), os.path.join(directory, f"{name}.scp")
    kaldiio.save_ark(ark, {k: v.astype(dtype) for k, v in feats.items()}, scp=scp,
                     compression_method=method)
    return ark, scp


def corpus(dim=40, lengths=(30, 12, 25)):
    rng = np.random.default_rng(0)
    return {f"spk1-u{i}": rng.standard_normal((n, dim)) for i, n in enumerate(lengths)}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_headers_agree_with_kaldiio_and_the_data_ends_at_the_file_end(tmp_path, fmt):
    feats = corpus()
    ark, scp = write_feats(tmp_path, feats, fmt)
    assert check_matrix_scp(scp, 40).num_checked == 3
    with ArchiveFiles() as archives:
        for key, rx in (line.split() for line in open(scp)):
            assert archives.header_shape(rx) == kaldiio.load_mat(rx).shape == feats[key].shape
    # one byte fewer and the last entry no longer fits: the data sizes are exact
    with open(ark, "r+b") as f:
        f.truncate(os.path.getsize(ark) - 1)
    with pytest.raises(InputError, match=r"feats\.scp: utterance spk1-u2 .*truncated archive"):
        check_matrix_scp(scp, 40)


def test_compressed_archives_written_by_kaldi_native_io(tmp_path):
    """kaldi-native-io ports Kaldi's CompressedMatrix: CM, CM2, CM3 and the automatic choice
    (CM2 up to 8 rows); the last entry ends exactly at the end of the file."""
    kio = pytest.importorskip("kaldi_native_io")
    ark, scp = str(tmp_path / "c.ark"), str(tmp_path / "c.scp")
    methods = ["kSpeechFeature", "kTwoByteAuto", "kOneByteAuto", "kAutomaticMethod", "kAutomaticMethod"]
    rng = np.random.default_rng(1)
    with kio.CompressedMatrixWriter(f"ark,scp:{ark},{scp}") as w:
        for i, method in enumerate(methods):
            w.write(f"u{i}", rng.random((4 + 3 * i, 13), np.float32), getattr(kio.CompressionMethod, method))
    shapes = kio.RandomAccessMatrixShapeReader(f"scp:{scp}")
    rx = dict(line.split() for line in open(scp))
    with ArchiveFiles() as archives:
        for key in rx:
            assert archives.header_shape(rx[key]) == (shapes[key].num_rows, shapes[key].num_cols)
    assert check_matrix_scp(scp, 13).num_checked == 5
    with open(ark, "r+b") as f:
        f.truncate(os.path.getsize(ark) - 1)
    with pytest.raises(InputError, match="utterance u4 .*truncated"):
        check_matrix_scp(scp, 13)


def test_truncated_archive_names_the_scp_and_the_utterance(tmp_path):
    ark, scp = write_feats(tmp_path, corpus(), "CM")
    with open(ark, "r+b") as f:
        f.truncate(os.path.getsize(ark) - 100)
    with pytest.raises(InputError) as error:
        check_matrix_scp(scp, 40)
    message = str(error.value)
    assert message.startswith(f"{scp}: utterance spk1-u2 ({ark}:") and "\n" not in message
    assert "needs" in message and "truncated archive?" in message


def test_wrong_feature_dim_names_the_utterance(tmp_path):
    feats = corpus()
    feats["spk1-u1"] = np.zeros((12, 65))
    _, scp = write_feats(tmp_path, feats)
    with pytest.raises(InputError, match=rf"^{scp}: utterance spk1-u1 has dim 65, "
                                         r"the network's input expects 40$"):
        check_features(scp, 40)
    with pytest.raises(InputError, match="utterance spk1-u1 has dim 65, utterance spk1-u0 expects 40"):
        check_matrix_scp(scp)  # without an expected dim the entries must agree


def test_empty_and_missing_scp(tmp_path):
    (tmp_path / "feats.scp").write_text("")
    with pytest.raises(InputError, match=rf"^{tmp_path}/feats\.scp is empty$"):
        check_features(str(tmp_path / "feats.scp"), 40)
    with pytest.raises(InputError, match="cannot open"):
        check_features(str(tmp_path / "nothing.scp"), 40)


def test_bad_offsets_and_objects(tmp_path):
    ark, scp = write_feats(tmp_path, corpus())
    size = os.path.getsize(ark)
    lines = {
        "beyond": f"u {ark}:{size + 10}", "missing": f"u {tmp_path}/gone.ark:5",
        "not_a_matrix": f"u {ark}:0",  # points at the key, not at \0B
    }
    matches = {"beyond": "offset .* is beyond the end", "missing": "cannot open .*gone.ark",
               "not_a_matrix": "expected a Kaldi object"}
    for name, line in lines.items():
        (tmp_path / "bad.scp").write_text(line + "\n")
        with pytest.raises(InputError, match=rf"bad\.scp: utterance u \(.*\): {matches[name]}"):
            check_matrix_scp(str(tmp_path / "bad.scp"), 40)
    vector_ark = str(tmp_path / "v.ark")
    kaldiio.save_ark(vector_ark, {"u": np.zeros(40, np.float32)}, scp=str(tmp_path / "v.scp"))
    with pytest.raises(InputError, match="expected a matrix .*got 'FV'"):
        check_matrix_scp(str(tmp_path / "v.scp"), 40)


def test_ranges_pipes_and_text_entries(tmp_path):
    ark, scp = write_feats(tmp_path, corpus())
    rx = dict(line.split() for line in open(scp))
    text_ark = str(tmp_path / "t.ark")
    kaldiio.save_ark(text_ark, {"t": np.zeros((3, 40), np.float32)}, scp=str(tmp_path / "t.scp"), text=True)
    text_rx = open(tmp_path / "t.scp").read().split()[1]
    (tmp_path / "mixed.scp").write_text(
        f"a {rx['spk1-u0']}[0:9]\nb {rx['spk1-u0']}[5:29,0:39]\nc copy-feats ark:x.ark ark:- |\n"
        f"d {text_rx}\n")
    check = check_matrix_scp(str(tmp_path / "mixed.scp"), 40)
    assert (check.num_checked, check.num_pipes, check.num_text, check.cols) == (2, 1, 1, 40)
    assert check.summary().endswith("2 entries checked, 1 pipe entries not checked, 1 text entries not checked")
    assert MatrixTable(str(tmp_path / "mixed.scp"))["b"].shape == (25, 40)  # what the loader reads
    (tmp_path / "cols.scp").write_text(f"a {rx['spk1-u0']}[0:9,0:19]\n")
    with pytest.raises(InputError, match="utterance a has dim 20, the network's input expects 40"):
        check_matrix_scp(str(tmp_path / "cols.scp"), 40)
    (tmp_path / "range.scp").write_text(f"a {rx['spk1-u0']}[0:30]\n")  # 30 rows: 0..29
    with pytest.raises(InputError, match=r"range\.scp: utterance a .*invalid range \[0:30\] for a 30x40"):
        check_matrix_scp(str(tmp_path / "range.scp"), 40)


def test_cmvn_stats_must_match_the_feature_dim(tmp_path):
    _, feats_scp = write_feats(tmp_path, corpus())
    _, cmvn_scp = write_feats(tmp_path, {"spk1": np.zeros((2, 41))}, "DM", name="cmvn")
    checks = check_features(feats_scp, 40, cmvn_scp)
    assert [c.num_checked for c in checks] == [3, 1]
    _, bad_cmvn = write_feats(tmp_path, {"spk1": np.zeros((2, 14))}, "DM", name="cmvn13")
    with pytest.raises(InputError, match=r"cmvn13\.scp: entry spk1 has dim 14, features of dim 40 expects 41"):
        check_features(feats_scp, 40, bad_cmvn)


# -- alignments and tree -------------------------------------------------------------------

@pytest.fixture
def ali_dir(tmp_path):
    from tests.kaldi.test_alignment import kaldi_tm, write_ali
    from tests.kaldi.test_transition import CASES

    _, ours = kaldi_tm()
    write_ali(tmp_path / "ali.1.gz", {"u1": np.array([1, 2, 3], np.int32)})
    (tmp_path / "num_jobs").write_text("1\n")
    (tmp_path / "final.mdl").write_bytes(BINARY_HEADER + ours.to_bytes(True))
    _, phones, num_pdf_classes = CASES["mixed"]
    khg.monophone_context_dependency(phones, num_pdf_classes).write(True, str(tmp_path / "tree"))
    return tmp_path, ours, write_ali


def test_alignments_and_tree_pass(ali_dir):
    path, tm, _ = ali_dir
    pdfs = check_alignments(str(path), tm, str(path / "pdf_store"))
    assert pdfs["u1"].tolist() == tm.tids_to_pdfs([1, 2, 3]).tolist()
    assert check_tree(str(path / "tree"), tm) == tm.num_pdfs == 8


def test_transition_id_out_of_range_names_archive_and_utterance(ali_dir):
    path, tm, write_ali = ali_dir
    write_ali(path / "ali.1.gz", {"u1": np.array([1, 2, 17], np.int32)})
    with pytest.raises(InputError, match=r"ali\.1\.gz: utterance 'u1': transition-id 17 out of range 1\.\.16"):
        check_alignments(str(path), tm, str(path / "pdf_store"))


def test_garbage_or_foreign_tree_is_refused(ali_dir):
    path, tm, _ = ali_dir
    (path / "tree").write_bytes(os.urandom(64))
    with pytest.raises(InputError, match=rf"^{path}/tree: not a Kaldi tree: byte \d+: "):
        check_alignments(str(path), tm, str(path / "pdf_store"))
    khg.monophone_context_dependency([1, 2, 3], [0, 3, 3, 3]).write(True, str(path / "tree"))
    with pytest.raises(InputError, match=rf"{path}/tree: the tree has 9 pdfs but {path}/final.mdl has 8"):
        check_alignments(str(path), tm, str(path / "pdf_store"))
    os.remove(path / "tree")
    with pytest.raises(InputError, match=rf"{path}/tree: cannot read the tree"):
        check_alignments(str(path), tm, str(path / "pdf_store"))


# -- minibatches ---------------------------------------------------------------------------

def test_every_archive_needs_one_full_minibatch():
    check_minibatches([20 * 128, 20 * 64], 20, "128,64")  # 64 left at the end still merge
    with pytest.raises(InputError, match=r"^archive 2: 1260 frames make 63 chunks of 20 frames, too few "
                                         r"for one minibatch of --trainer\.rnn\.num-chunk-per-minibatch=128,64: "
                                         r"raise --trainer\.samples-per-iter or lower "
                                         r"--trainer\.rnn\.num-chunk-per-minibatch$"):
        check_minibatches([20 * 128, 20 * 63], 20, "128,64")
    check_minibatches({7: 20}, 20, "1:64")
    with pytest.raises(InputError, match="^archive 7: 19 frames make 0 chunks"):
        check_minibatches({7: 19}, 20, "1:64")


# -- the skip ledger end to end: alignment tolerance, NaN features, unreadable entries --------

def test_alignment_tolerance_and_skips_are_counted_once(tmp_path):
    """1 frame short: kept and padded; 3 frames short: dropped; NaN features: skipped once
    however many epochs load them; a corrupt entry: skipped as unreadable."""
    feats = {f"u{i}": np.zeros((50, 40)) for i in range(5)}
    feats["u3"][10, 3] = np.nan
    _, scp = write_feats(tmp_path, feats, "FM")
    table = MatrixTable(scp)
    pdfs = {"u0": np.zeros(50, np.int32), "u1": np.zeros(49, np.int32), "u2": np.zeros(47, np.int32),
            "u3": np.zeros(50, np.int32), "u4": np.zeros(50, np.int32)}
    report = SkipReport()
    lengths = {u: table.shape(u)[0] for u in table}
    targets, _ = match_alignments(lengths, pdfs, report)
    source = UtteranceSource(lengths={u: lengths[u] for u in targets}, load_features=table.__getitem__,
                             targets=targets, feat_dim=40, num_pdfs=1)
    usable = screen_utterances(source, ChunkConfig((20,), 0, 0), report=report)
    assert sorted(usable) == ["u0", "u1", "u3", "u4"]
    # u4's data is overwritten with garbage after the start-up check (a bad disk block)
    ark_path, offset = table.rxfilename("u4").rsplit(":", 1)
    with open(ark_path, "r+b") as f:
        f.seek(int(offset))
        f.write(b"\0BXX ")
    for _ in range(3):  # three epochs
        loaded = {u: load_utterance(source, u, report) for u in usable}
        assert [u for u, x in loaded.items() if x is None] == ["u3", "u4"]
    assert loaded["u1"].targets.shape == (49,)  # the collate step gives frame 49 weight 0
    assert report.counts == {"target_length_mismatch": 1, "targets_padded": 1,
                             "non_finite_features": 1, "unreadable": 1}
    assert report.skipped["target_length_mismatch"] == {"u2": 50}
    assert report.skipped["targets_padded"] == {"u1": 1}
    assert report.one_line() == ("skipped 3 utterances: 1 non-finite features, "
                                 "1 alignment length mismatch, 1 unreadable features; "
                                 "kept 1 utterance: 1 alignment a few frames short (padded)")
