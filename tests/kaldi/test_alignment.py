"""Alignment directories written by kaldi-native-io, mapped with a kaldi-hmm-gmm transition model."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from kaldi_avg.data import SkipReport
from kaldi_avg.kaldi.alignment import (
    AlignmentMatchReport,
    alignment_archives,
    match_alignments,
    pdf_counts,
    read_alignments,
)
from kaldi_avg.kaldi.binary import BINARY_HEADER, KaldiFormatError, KaldiReader
from kaldi_avg.kaldi.transition import TransitionModel

from .test_transition import khg_transition_model

kio = pytest.importorskip("kaldi_native_io", reason="kaldi-native-io writes the reference archives")


def kaldi_tm():
    khg_tm = khg_transition_model("mixed")
    ours = TransitionModel.read(KaldiReader.from_bytes(str(khg_tm).encode()))
    return khg_tm, ours


def write_ali(path, alis):
    """The way align_si.sh writes them: `ark:| gzip -c > ali.N.gz`."""
    with kio.Int32VectorWriter(f"ark:| gzip -c > {path}") as w:
        for utt, tids in alis.items():
            w[utt] = tids.tolist()


@pytest.fixture
def ali_dir(tmp_path):
    """Two jobs, a GMM-style final.mdl (transition model prefix + other bytes)."""
    khg_tm, ours = kaldi_tm()
    rng = np.random.default_rng(0)
    jobs = [{f"s1-u{i}": rng.integers(1, 17, 20 + i).astype(np.int32) for i in range(3)},
            {f"s2-u{i}": rng.integers(1, 17, 30 + i).astype(np.int32) for i in range(2)}]
    for j, alis in enumerate(jobs, 1):
        write_ali(tmp_path / f"ali.{j}.gz", alis)
    (tmp_path / "num_jobs").write_text("2\n")
    (tmp_path / "final.mdl").write_bytes(BINARY_HEADER + ours.to_bytes(True) + b"<DIMENSION> \x04\x0d\x00\x00\x00")
    tids = {u: t for alis in jobs for u, t in alis.items()}
    return str(tmp_path), tids, np.asarray(khg_tm.transition_id_to_pdf_array())


def test_reads_all_jobs_and_maps_like_ali_to_pdf(ali_dir):
    path, tids, kaldi_map = ali_dir
    pdfs = read_alignments(path)
    assert sorted(pdfs) == sorted(tids)
    for utt, t in tids.items():
        np.testing.assert_array_equal(pdfs[utt], kaldi_map[t])
        assert pdfs[utt].dtype == np.int32
    _, ours = kaldi_tm()
    assert read_alignments(path, trans_model=ours).keys() == pdfs.keys()


def test_missing_archive_and_num_jobs_are_named(ali_dir):
    path, _, _ = ali_dir
    os.remove(f"{path}/ali.2.gz")
    with pytest.raises(KaldiFormatError, match=r"ali\.2\.gz: missing \(1 of the 2 archives"):
        read_alignments(path)
    os.remove(f"{path}/num_jobs")
    with pytest.raises(KaldiFormatError, match="num_jobs: cannot read"):
        alignment_archives(path)


def test_truncated_archive_names_the_utterance(ali_dir):
    path, _, _ = ali_dir
    archive = gzip.decompress(Path(f"{path}/ali.1.gz").read_bytes())
    with open(f"{path}/ali.1.gz", "wb") as f:
        f.write(gzip.compress(archive[:-12]))  # a complete gzip stream of a cut-off archive
    with pytest.raises(KaldiFormatError, match=r"ali\.1\.gz: entry 's1-u2' is truncated"):
        read_alignments(path)


def test_cut_off_gzip_stream_is_named(ali_dir):
    path, _, _ = ali_dir
    data = Path(f"{path}/ali.1.gz").read_bytes()
    with open(f"{path}/ali.1.gz", "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(KaldiFormatError, match=r"ali\.1\.gz: (entry 's1-u\d' is truncated|"
                                               r"archive is cut off or corrupt after entry 's1-u\d')"):
        read_alignments(path)


def test_duplicate_utterance_and_bad_transition_id(ali_dir):
    path, tids, _ = ali_dir
    write_ali(f"{path}/ali.2.gz", {"s1-u1": tids["s1-u1"]})
    with pytest.raises(KaldiFormatError, match=r"ali\.2\.gz: utterance 's1-u1' is also in .*ali\.1\.gz"):
        read_alignments(path)
    write_ali(f"{path}/ali.2.gz", {"s2-u0": np.array([1, 99], np.int32)})
    with pytest.raises(KaldiFormatError, match=r"ali\.2\.gz: utterance 's2-u0': transition-id 99 out of range"):
        read_alignments(path)


def test_match_alignments_counts_and_merges():
    pdfs = {"a": np.zeros(5, np.int32), "b": np.zeros(1, np.int32), "extra": np.zeros(1, np.int32)}
    frames = {"a": 5, "b": 4, "c": 7}
    matched, report = match_alignments(frames, pdfs)
    assert list(matched) == ["a"]
    assert (report.num_matched, report.num_no_alignment, report.num_length_mismatch,
            report.num_unused_alignments, report.num_dropped) == (1, 1, 1, 1, 2)
    assert report.summary() == ("1 utterances with alignments; 1 skipped without alignment (e.g. c); "
                                "1 skipped for a length mismatch (e.g. b (feats 4, ali 1)); "
                                "1 alignments for utterances not in the data")
    _, other = match_alignments({f"x{i}": 1 for i in range(7)}, {})
    total = AlignmentMatchReport.merge([report, other])
    assert (total.num_matched, total.num_no_alignment, total.num_length_mismatch) == (1, 8, 1)
    assert total.no_alignment_examples == ["c", "x0", "x1", "x2", "x3"]


def test_match_alignments_applies_nnet3_get_egs_tolerance():
    """|alignment - frames| <= 2 is kept unchanged (nnet3-get-egs --targets-length-tolerance=2);
    beyond it the utterance is dropped and recorded once in the SkipReport."""
    frames = {"short1": 50, "long2": 50, "short3": 50, "long3": 50, "none": 40}
    pdfs = {"short1": np.zeros(49, np.int32), "long2": np.zeros(52, np.int32),
            "short3": np.zeros(47, np.int32), "long3": np.zeros(53, np.int32)}
    skipped = SkipReport()
    matched, report = match_alignments(frames, pdfs, skipped)
    assert list(matched) == ["short1", "long2"] and len(matched["long2"]) == 52
    assert (report.num_matched, report.num_length_tolerated, report.num_length_mismatch,
            report.num_no_alignment) == (2, 2, 2, 1)
    assert "2 of them within the length tolerance" in report.summary()
    assert skipped.skipped == {"target_length_mismatch": {"short3": 50, "long3": 50},
                               "missing_targets": {"none": 40}}
    match_alignments(frames, pdfs, skipped)  # a second pass (e.g. a resumed run) adds nothing
    assert skipped.total() == 3
    exact, _ = match_alignments(frames, pdfs, length_tolerance=0)
    assert list(exact) == []


def test_pdf_counts():
    pdfs = {"a": np.array([0, 2, 2], np.int32), "b": np.array([], np.int32), "c": np.array([3], np.int32)}
    np.testing.assert_array_equal(pdf_counts(pdfs, 5), [1, 0, 2, 1, 0])
    with pytest.raises(ValueError, match="utterance 'c': pdf-id 3 outside 0..2"):
        pdf_counts(pdfs, 3)
