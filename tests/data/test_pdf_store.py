"""PdfStore: the memory-mapped pdf-ids of an alignment dir, against read_alignments (ali-to-pdf)."""
import json
import os

import numpy as np
import pytest

from kaldi_avg.data import ChunkConfig, SkipReport, UtteranceSource, load_utterance, screen_utterances
from kaldi_avg.data.pdf_store import (
    PdfStore,
    StalePdfStore,
    build_pdf_store,
    ensure_pdf_store,
    pdf_dtype,
)
from kaldi_avg.kaldi.alignment import read_alignments
from kaldi_avg.kaldi.binary import KaldiFormatError
from tests.kaldi.test_alignment import kaldi_tm, write_ali


@pytest.fixture
def ali_dir(tmp_path):
    """Three jobs (one empty), utterance ids of different lengths, a non-ASCII one."""
    _, ours = kaldi_tm()
    rng = np.random.default_rng(0)
    jobs = [{f"s1-u{i}": rng.integers(1, 17, 20 + i).astype(np.int32) for i in range(3)},
            {},
            {"s2-long-utterance-id": rng.integers(1, 17, 31).astype(np.int32),
             "s2-é": rng.integers(1, 17, 7).astype(np.int32), "a": rng.integers(1, 17, 1).astype(np.int32)}]
    d = tmp_path / "ali"
    d.mkdir()
    for j, alis in enumerate(jobs, 1):
        write_ali(d / f"ali.{j}.gz", alis)
    (d / "num_jobs").write_text("3\n")
    (d / "final.mdl").write_bytes(b"\0B" + ours.to_bytes(True))
    return str(d)


def test_same_pdfs_as_read_alignments(ali_dir, tmp_path):
    expected = read_alignments(ali_dir)
    build_pdf_store(ali_dir, str(tmp_path / "store"))
    store = PdfStore.open(str(tmp_path / "store"), ali_dir)
    assert list(store.keys()) == sorted(expected) and len(store) == len(expected)
    for utt, pdfs in expected.items():
        got = store[utt]
        assert got.dtype == np.int16 and not got.flags.writeable
        np.testing.assert_array_equal(got, pdfs)
        assert store.length(utt) == len(pdfs) and utt in store
    assert store.num_frames == sum(map(len, expected.values()))
    for missing in ("s1-u", "s1-u00", "zzz", "s2-long-utterance-id-and-more", 3):
        assert missing not in store and store.get(missing) is None
    with pytest.raises(KeyError, match="nope"):
        store["nope"]


def test_dtype_follows_the_number_of_pdfs(ali_dir, tmp_path):
    assert pdf_dtype(32767) == np.int16 and pdf_dtype(32768) == np.int32
    _, tm = kaldi_tm()

    class ManyPdfs:  # a transition model whose pdf-ids need 32 bits
        num_pdfs = 70000

        def tids_to_pdfs(self, tids, what):
            return tm.tids_to_pdfs(tids, what) + 69990

    store = build_pdf_store(ali_dir, str(tmp_path / "store"), ManyPdfs())
    assert store.dtype == np.int32
    for utt, pdfs in read_alignments(ali_dir).items():
        np.testing.assert_array_equal(store[utt], pdfs + 69990)


def test_serves_as_targets_of_an_utterance_source(ali_dir, tmp_path):
    store = build_pdf_store(ali_dir, str(tmp_path / "store"))
    as_dict = read_alignments(ali_dir)
    lengths = {u: len(p) for u, p in as_dict.items()} | {"no-alignment": 30}
    config = ChunkConfig.from_egs_options("5", model_left_context=0, model_right_context=0)

    def source(targets):
        return UtteranceSource(lengths=lengths, load_features=lambda u: np.zeros((lengths[u], 2), np.float32),
                               targets=targets, feat_dim=2, num_pdfs=store.num_pdfs)

    reports = SkipReport(), SkipReport()
    usable = [screen_utterances(source(t), config, report=r) for t, r in zip((as_dict, store), reports)]
    assert usable[0] == usable[1] and reports[0].summary() == reports[1].summary()
    for utt in usable[1]:
        loaded = load_utterance(source(store), utt, SkipReport())
        np.testing.assert_array_equal(loaded.targets, as_dict[utt])


def test_stale_when_the_alignments_change(ali_dir, tmp_path):
    store_dir = str(tmp_path / "store")
    ensure_pdf_store(ali_dir, store_dir)
    header = json.load(open(os.path.join(store_dir, "header.json")))
    assert set(header["source"]["files"]) == {"num_jobs", "final.mdl", "ali.1.gz", "ali.2.gz", "ali.3.gz"}
    PdfStore.open(store_dir, ali_dir)
    _, tm = kaldi_tm()
    new = np.array([16, 16, 1], np.int32)
    write_ali(os.path.join(ali_dir, "ali.2.gz"), {"s1-v": new})
    with pytest.raises(StalePdfStore, match="other alignments"):
        PdfStore.open(store_dir, ali_dir)
    store = ensure_pdf_store(ali_dir, store_dir)
    np.testing.assert_array_equal(store["s1-v"], tm.tids_to_pdfs(new))
    os.utime(os.path.join(ali_dir, "final.mdl"), ns=(0, 0))  # same size, another mtime
    with pytest.raises(StalePdfStore):
        PdfStore.open(store_dir, ali_dir)


def test_a_failed_rebuild_leaves_no_store_and_no_temporaries(ali_dir, tmp_path):
    store_dir = str(tmp_path / "store")
    build_pdf_store(ali_dir, store_dir)
    write_ali(os.path.join(ali_dir, "ali.2.gz"), {"s9-bad": np.array([1, 999], np.int32)})
    with pytest.raises(KaldiFormatError, match=r"ali.2.gz: utterance 's9-bad': transition-id 999"):
        ensure_pdf_store(ali_dir, store_dir)
    with pytest.raises(StalePdfStore, match="no pdf store"):
        PdfStore.open(store_dir)
    assert not [n for n in os.listdir(store_dir) if n.startswith(".tmp")]


def test_utterance_in_two_archives_names_both(ali_dir, tmp_path):
    write_ali(os.path.join(ali_dir, "ali.2.gz"), {"s1-u1": np.array([1, 2], np.int32)})
    with pytest.raises(KaldiFormatError, match=r"ali.2.gz: utterance 's1-u1' is also in .*ali.1.gz"):
        build_pdf_store(ali_dir, str(tmp_path / "store"))


def test_processes_share_one_mapping(ali_dir, tmp_path):
    """What every rank opens is the file rank 0 wrote: a view, not a private copy."""
    store = build_pdf_store(ali_dir, str(tmp_path / "store"))
    again = PdfStore.open(store.dir, ali_dir)
    view = again["s1-u2"]
    assert not view.flags.owndata and view.base is not None
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_ranks_build_it_together(ali_dir, tmp_path, ranks):
    """Each rank converts its share of the archives; every rank gets the store one process builds."""
    from kaldi_avg.parallel.inprocess import run_ranks
    one = build_pdf_store(ali_dir, str(tmp_path / "one"))
    stores = run_ranks(ranks, lambda comm: ensure_pdf_store(ali_dir, str(tmp_path / "many"), comm=comm))
    for store in stores:
        assert list(store) == list(one)
        for utt in one:
            np.testing.assert_array_equal(store[utt], one[utt])
    assert sorted(os.listdir(tmp_path / "many")) == sorted(os.listdir(tmp_path / "one"))   # no part files left
    # fresh: opened, not rebuilt (rank 0 decides for all)
    mtime = os.path.getmtime(tmp_path / "many" / "header.json")
    run_ranks(ranks, lambda comm: ensure_pdf_store(ali_dir, str(tmp_path / "many"), comm=comm))
    assert os.path.getmtime(tmp_path / "many" / "header.json") == mtime


def test_a_bad_archive_fails_on_the_rank_that_converts_it(ali_dir, tmp_path):
    from kaldi_avg.parallel.inprocess import run_ranks
    write_ali(os.path.join(ali_dir, "ali.2.gz"), {"b": np.array([1, 99], np.int32)})   # rank 1's archive
    with pytest.raises(Exception, match=r"ali\.2\.gz: utterance 'b': transition-id 99"):
        run_ranks(2, lambda comm: ensure_pdf_store(ali_dir, str(tmp_path / "store"), comm=comm), timeout_s=10)
