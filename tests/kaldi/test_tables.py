"""Archives and scripts, cross-checked with kaldi-native-io (a port of Kaldi's table code)."""
import gzip
import os

import numpy as np
import pytest

from kaldi_avg.kaldi.binary import KaldiFormatError
from kaldi_avg.kaldi.tables import (
    MatrixTable,
    matrix_shape,
    parse_specifier,
    read_int_vector_table,
    read_matrix_table,
    write_int_vector_table,
    write_matrix_table,
)

kio = pytest.importorskip("kaldi_native_io", reason="kaldi-native-io is the reference reader/writer")


@pytest.fixture
def mats():
    rng = np.random.default_rng(0)
    return {f"utt{i}": rng.standard_normal((12 + i, 5)).astype(np.float32) for i in range(3)}


@pytest.fixture
def alis():
    rng = np.random.default_rng(1)
    return {"a": rng.integers(1, 300, 40).astype(np.int32), "b": np.array([], np.int32),
            "c": np.array([2, 4, 3], np.int32)}


def kio_float_archive(spec, mats):
    with kio.FloatMatrixWriter(spec) as w:
        for k, v in mats.items():
            w[k] = v


def kio_read_all(reader_cls, spec):
    return {k: np.array(v) for k, v in reader_cls(spec)}


def assert_tables_equal(got, want, atol=0.0):
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=atol, rtol=0)


# -- float matrices ---------------------------------------------------------------------

def test_our_archive_and_scp_are_byte_identical_to_kaldis(tmp_path, monkeypatch, mats):
    monkeypatch.chdir(tmp_path)  # relative names, as in data/*/feats.scp
    assert write_matrix_table("ark,scp:ours.ark,ours.scp", mats) == 3
    kio_float_archive("ark,scp:theirs.ark,theirs.scp", mats)
    assert (tmp_path / "ours.ark").read_bytes() == (tmp_path / "theirs.ark").read_bytes()
    assert (tmp_path / "ours.scp").read_text() == (tmp_path / "theirs.scp").read_text().replace("theirs", "ours")
    assert_tables_equal(kio_read_all(kio.SequentialFloatMatrixReader, "scp:ours.scp"), mats)


@pytest.mark.parametrize("spec,compress", [("ark", None), ("ark", True), ("ark,t", None)])
def test_empty_matrices_are_written_0x0_as_kaldi_requires(tmp_path, spec, compress):
    write_matrix_table(f"{spec}:{tmp_path}/e.ark", {"e": np.zeros((0, 5), np.float32)}, compress=compress)
    assert kio_read_all(kio.SequentialFloatMatrixReader, f"ark:{tmp_path}/e.ark")["e"].shape == (0, 0)
    assert dict(read_matrix_table(f"ark:{tmp_path}/e.ark"))["e"].shape == (0, 0)


@pytest.mark.parametrize("spec", ["ark:{d}/k.ark", "ark,s,cs:{d}/k.ark", "ark,o,bg:{d}/k.ark",
                                  "scp:{d}/k.scp", "scp,p:{d}/k.scp", "ark:gunzip -c {d}/k.ark.gz |"])
def test_we_read_kaldi_archives(tmp_path, mats, spec):
    kio_float_archive(f"ark,scp:{tmp_path}/k.ark,{tmp_path}/k.scp", mats)
    (tmp_path / "k.ark.gz").write_bytes(gzip.compress((tmp_path / "k.ark").read_bytes()))
    got = dict(read_matrix_table(spec.format(d=tmp_path)))
    assert_tables_equal(got, mats)
    assert all(v.dtype == np.float32 and v.flags.writeable for v in got.values())


def test_text_archives_both_ways(tmp_path, mats):
    mats["utt0"][0, 0] = 0.0  # a leading integer-looking value (kaldiio would parse ints)
    kio_float_archive(f"ark,t:{tmp_path}/k.txt", mats)
    assert_tables_equal(dict(read_matrix_table(f"ark,t:{tmp_path}/k.txt")), mats, atol=5e-7 * 4)
    write_matrix_table(f"ark,t:{tmp_path}/o.txt", mats)
    assert_tables_equal(kio_read_all(kio.SequentialFloatMatrixReader, f"ark:{tmp_path}/o.txt"), mats)


def test_double_matrices_stay_double(tmp_path):
    stats = {"spk1": np.array([[1e10 + 0.5, 2.0, 3.0], [4.0, 5.0, 0.0]])}
    write_matrix_table(f"ark,scp:{tmp_path}/c.ark,{tmp_path}/c.scp", stats)
    reader = kio.RandomAccessDoubleMatrixReader(f"scp:{tmp_path}/c.scp")
    np.testing.assert_array_equal(np.array(reader["spk1"]), stats["spk1"])
    np.testing.assert_array_equal(MatrixTable(f"{tmp_path}/c.scp", dtype=np.float64)["spk1"], stats["spk1"])


def test_scp_ranges_match_kaldi(tmp_path, mats):
    kio_float_archive(f"ark,scp:{tmp_path}/k.ark,{tmp_path}/k.scp", mats)
    offset = (tmp_path / "k.scp").read_text().splitlines()[0].split(":")[-1]
    ranges = {"r": "[1:2]", "rc": "[1:2,0:1]", "c": "[:,3:4]", "one": "[5:5,2:2]"}
    (tmp_path / "r.scp").write_text("".join(f"{k} {tmp_path}/k.ark:{offset}{r}\n" for k, r in ranges.items()))
    theirs = kio.RandomAccessFloatMatrixReader(f"scp:{tmp_path}/r.scp")
    ours = MatrixTable(f"scp:{tmp_path}/r.scp")
    for key in ranges:
        np.testing.assert_array_equal(ours[key], np.array(theirs[key]))
        assert ours.shape(key) == np.array(theirs[key]).shape


@pytest.mark.parametrize("bad", ["[3:99]", "[4:2]", "[0:1,0:5]", "[a:b]"])
def test_scp_range_outside_the_matrix_is_an_error(tmp_path, mats, bad):
    kio_float_archive(f"ark,scp:{tmp_path}/k.ark,{tmp_path}/k.scp", mats)
    (tmp_path / "r.scp").write_text(f"x {tmp_path}/k.ark:5{bad}\n")
    with pytest.raises(KaldiFormatError, match=r"r\.scp: entry 'x'.*range"):
        MatrixTable(f"{tmp_path}/r.scp")["x"]


@pytest.mark.parametrize("method,atol", [("kSpeechFeature", 0.03), ("kTwoByteAuto", 1e-4),
                                         ("kOneByteAuto", 0.03)])
def test_kaldi_compressed_matrices_decode_like_kaldi(tmp_path, mats, method, atol):
    with kio.CompressedMatrixWriter(f"ark,scp:{tmp_path}/c.ark,{tmp_path}/c.scp") as w:
        for k, v in mats.items():
            w.write(k, v, getattr(kio.CompressionMethod, method))
    kaldi_decoded = kio_read_all(kio.SequentialFloatMatrixReader, f"ark:{tmp_path}/c.ark")
    ours = dict(read_matrix_table(f"scp:{tmp_path}/c.scp"))
    assert_tables_equal(ours, kaldi_decoded, atol=1e-6)
    assert_tables_equal(ours, mats, atol=atol)  # within quantization of the originals
    table = MatrixTable(f"{tmp_path}/c.scp")
    assert [table.shape(k) for k in mats] == [m.shape for m in mats.values()]


@pytest.mark.parametrize("compress,token", [(True, b"CM "), (3, b"CM2 "), (5, b"CM3 ")])
def test_kaldi_reads_our_compressed_matrices(tmp_path, mats, compress, token):
    write_matrix_table(f"ark:{tmp_path}/c.ark", mats, compress=compress)
    assert token in (tmp_path / "c.ark").read_bytes()[:20]
    theirs = kio_read_all(kio.SequentialFloatMatrixReader, f"ark:{tmp_path}/c.ark")
    assert_tables_equal(dict(read_matrix_table(f"ark:{tmp_path}/c.ark")), theirs, atol=1e-6)
    assert_tables_equal(theirs, mats, atol=0.03)


def test_matrix_table_over_an_archive_and_shapes(tmp_path, mats):
    kio_float_archive(f"ark,scp:{tmp_path}/k.ark,{tmp_path}/k.scp", mats)
    table = MatrixTable(f"ark:{tmp_path}/k.ark")
    assert list(table) == list(mats) and len(table) == 3 and "nope" not in table
    np.testing.assert_array_equal(table["utt2"], mats["utt2"])
    scp_table = MatrixTable(f"{tmp_path}/k.scp")
    assert scp_table.shape("utt1") == (13, 5)
    assert matrix_shape(scp_table.rxfilename("utt2")) == (14, 5)


# -- int32 vectors (alignments) ---------------------------------------------------------

def test_int_vectors_byte_identical_to_kaldi(tmp_path, alis):
    write_int_vector_table(f"ark:{tmp_path}/ours.ark", alis)
    with kio.Int32VectorWriter(f"ark:{tmp_path}/theirs.ark") as w:
        for k, v in alis.items():
            w[k] = v.tolist()
    assert (tmp_path / "ours.ark").read_bytes() == (tmp_path / "theirs.ark").read_bytes()
    # docs/kaldi-formats.md 1.8 example (there with key utt1): [2, 4, 3] under key "c"
    assert (tmp_path / "ours.ark").read_bytes().endswith(
        bytes.fromhex("63 20 00 42 04 03000000 04 02000000 04 04000000 04 03000000"))
    assert_tables_equal(dict(read_int_vector_table(f"ark:{tmp_path}/theirs.ark")), alis)


def test_int_vectors_through_gzip_pipes(tmp_path, alis):
    with kio.Int32VectorWriter(f"ark:| gzip -c > {tmp_path}/ali.1.gz") as w:
        for k, v in alis.items():
            w[k] = v.tolist()
    assert_tables_equal(dict(read_int_vector_table(f"ark:gunzip -c {tmp_path}/ali.1.gz|")), alis)
    write_int_vector_table(f"ark:| gzip -c > {tmp_path}/ali.2.gz", alis)
    r = kio.SequentialInt32VectorReader(f"ark:gunzip -c {tmp_path}/ali.2.gz|")
    assert_tables_equal({k: np.array(v) for k, v in r}, alis)


def test_text_int_vectors_match_kaldi(tmp_path, alis):
    write_int_vector_table(f"ark,t:{tmp_path}/ours.txt", alis)
    with kio.Int32VectorWriter(f"ark,t:{tmp_path}/theirs.txt") as w:
        for k, v in alis.items():
            w[k] = v.tolist()
    assert (tmp_path / "ours.txt").read_text() == (tmp_path / "theirs.txt").read_text()
    assert_tables_equal(dict(read_int_vector_table(f"ark,t:{tmp_path}/theirs.txt")), alis)


# -- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["matrix", "int"])
def test_truncated_archive_names_file_and_key(tmp_path, mats, alis, kind):
    path = tmp_path / "x.ark"
    if kind == "matrix":
        write_matrix_table(f"ark:{path}", mats)
        read = read_matrix_table
    else:
        write_int_vector_table(f"ark:{path}", alis)
        read = read_int_vector_table
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    last = list(mats if kind == "matrix" else alis)[-1]
    with pytest.raises(KaldiFormatError, match=rf"x\.ark: entry '{last}' is truncated"):
        list(read(f"ark:{path}"))
    assert len(list(read(f"ark,p:{path}"))) == 2  # permissive: stops at the bad entry


def test_truncated_vector_is_not_silently_short(tmp_path):
    path = tmp_path / "v.ark"
    with kio.FloatVectorWriter(f"ark:{path}") as w:
        w["v"] = np.arange(10, dtype=np.float32)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(KaldiFormatError, match="entry 'v' is truncated"):
        list(read_int_vector_table(f"ark:{path}"))


def test_wrong_kind_of_object_is_named(tmp_path, mats, alis):
    write_int_vector_table(f"ark:{tmp_path}/a.ark", alis)
    with pytest.raises(KaldiFormatError, match="entry 'a': expected a float matrix"):
        list(read_matrix_table(f"ark:{tmp_path}/a.ark"))


def test_failing_pipe_is_an_error(tmp_path):
    with pytest.raises(KaldiFormatError, match="exited with status"):
        list(read_matrix_table(f"ark:gunzip -c {tmp_path}/missing.gz 2>/dev/null |"))


def test_bad_scp_line_names_the_line(tmp_path):
    (tmp_path / "f.scp").write_text("a x.ark:1\nbroken\n")
    with pytest.raises(KaldiFormatError, match=r"f\.scp:2"):
        len(MatrixTable(f"{tmp_path}/f.scp"))


@pytest.mark.parametrize("spec", ["feats.ark", "ark,zz:x", "ark,scp:x.ark", "scp:x.scp"])
def test_bad_wspecifiers(spec):
    with pytest.raises(ValueError):
        parse_specifier(spec, for_writing=True)


def test_failed_write_leaves_no_files(tmp_path, mats):
    def items():
        yield "utt0", mats["utt0"]
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        write_matrix_table(f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp", items())
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="invalid table key"):
        write_matrix_table(f"ark:{tmp_path}/f.ark", {"has space": mats["utt0"]})
    assert os.listdir(tmp_path) == []
