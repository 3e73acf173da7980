"""The tree reader's pdf count, checked against kaldi-hmm-gmm (a port of Kaldi's tree code)."""
import numpy as np
import pytest

from kaldi_avg.kaldi.binary import BINARY_HEADER, KaldiFormatError
from kaldi_avg.kaldi.tree import read_tree_num_pdfs

from .test_transition import CASES

khg = pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm is the reference implementation")


def khg_read(data: bytes):
    """Kaldi's ContextDependency::Read on binary bytes (as kaldi_avg.frontend.hmm.read_tree)."""
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    tree.__setstate__((np.frombuffer(data[2:], np.int8).tolist(),))
    return tree


def i32(v: int) -> bytes:
    return b"\x04" + int(v).to_bytes(4, "little", signed=True)


def split_tree() -> bytes:
    """A triphone-style tree with SE questions, a TE table with a NULL entry, and leaves 0..5."""
    def ce(pdf):
        return b"CE " + i32(pdf)

    yes_set = b"\x04" + (2).to_bytes(4, "little") + (1).to_bytes(4, "little") + (3).to_bytes(4, "little")
    table = b"TE " + i32(-1) + b"\xfc" + (3).to_bytes(4, "little") + b"( NULL " + ce(4) + ce(5) + b") "
    inner = b"SE " + i32(0) + yes_set + b"{ " + ce(0) + ce(1) + b"} "
    root = b"SE " + i32(1) + yes_set + b"{ " + inner + b"SE " + i32(2) + yes_set + b"{ " + \
        table + b"SE " + i32(-1) + yes_set + b"{ " + ce(2) + ce(3) + b"} " + b"} " + b"} "
    return BINARY_HEADER + b"ContextDependency " + i32(3) + i32(1) + b"ToPdf " + root + \
        b"EndContextDependency "


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("binary", [True, False])
def test_monophone_trees_written_by_kaldi(tmp_path, case, binary):
    _, phones, num_pdf_classes = CASES[case]
    tree = khg.monophone_context_dependency(phones, num_pdf_classes)
    path = str(tmp_path / "tree")
    tree.write(binary, path)
    assert read_tree_num_pdfs(path) == tree.num_pdfs


def test_split_tree_agrees_with_kaldi(tmp_path):
    data = split_tree()
    (tmp_path / "tree").write_bytes(data)
    assert read_tree_num_pdfs(str(tmp_path / "tree")) == khg_read(data).num_pdfs == 6


@pytest.mark.parametrize("damage, match", [
    (lambda d: d[:len(d) // 2], "unexpected end of file|expected"),
    (lambda d: d.replace(b"CE ", b"XE ", 1), "expected an event map"),
    (lambda d: d.replace(b"ToPdf", b"ToPdq"), "expected ToPdf"),
    (lambda d: BINARY_HEADER + b"not a tree ", "expected token 'ContextDependency'"),
    (lambda d: b"some text file\n", "expected token 'ContextDependency'"),
    (lambda d: BINARY_HEADER + b"\xff" * 40, "unexpected end of file"),
    (lambda d: d.replace(b"\xfc\x03\x00\x00\x00", b"\xfc\xff\xff\xff\x7f"), "longer than the file"),
])
def test_damaged_trees_are_refused_naming_the_file(tmp_path, damage, match):
    path = tmp_path / "tree"
    path.write_bytes(damage(split_tree()))
    with pytest.raises(KaldiFormatError, match=match) as error:
        read_tree_num_pdfs(str(path))
    assert str(path) in str(error.value)
