"""TransitionModel read/write checked against kaldi-hmm-gmm (a port of Kaldi's hmm code)."""
import numpy as np
import pytest

from kaldi_avg.kaldi.binary import BINARY_HEADER, KaldiFormatError, KaldiReader
from kaldi_avg.kaldi.transition import TransitionModel, read_transition_model

khg = pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm is the reference implementation")

# docs/kaldi-formats.md 2.4 worked example: phones 2,3 with 3 emitting states, phone 1 with 2.
MIXED_TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
2 3
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.75 <Transition> 2 0.25 </State>
<State> 2 <PdfClass> 2 <Transition> 2 0.75 <Transition> 3 0.25 </State>
<State> 3 </State>
</TopologyEntry>
<TopologyEntry>
<ForPhones>
1
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>
<State> 2 </State>
</TopologyEntry>
</Topology>
"""

# Separate forward and self-loop pdf classes (written as <Tuples>), with a skip transition.
SPLIT_PDF_TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3 4
</ForPhones>
<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.3 <Transition> 2 0.2 </State>
<State> 1 <ForwardPdfClass> 2 <SelfLoopPdfClass> 2 <Transition> 1 0.6 <Transition> 2 0.4 </State>
<State> 2 </State>
</TopologyEntry>
</Topology>
"""

CASES = {
    "mixed": (MIXED_TOPO, [1, 2, 3], [0, 2, 3, 3]),
    "split_pdf": (SPLIT_PDF_TOPO, [1, 2, 3, 4], [0, 3, 3, 3, 3]),
}


def khg_transition_model(case: str = "mixed"):
    """A transition model built by kaldi-hmm-gmm from a topology and a monophone tree."""
    topo_text, phones, num_pdf_classes = CASES[case]
    topo = khg.HmmTopology()
    topo.read(topo_text)
    ctx = khg.monophone_context_dependency(phones, num_pdf_classes)
    return khg.TransitionModel(ctx, topo)


def parse_text(text: str) -> TransitionModel:
    return TransitionModel.read(KaldiReader.from_bytes(text.encode(), source="str(tm)"))


@pytest.fixture(params=sorted(CASES))
def khg_tm(request):
    return khg_transition_model(request.param)


def test_tid_to_pdf_matches_kaldi(khg_tm):
    ours = parse_text(str(khg_tm))
    np.testing.assert_array_equal(ours.transition_id_to_pdf_array(),
                                  np.asarray(khg_tm.transition_id_to_pdf_array()))
    assert ours.num_pdfs == khg_tm.num_pdfs
    tids = np.arange(1, ours.num_transition_ids + 1)
    np.testing.assert_array_equal(ours.tids_to_pdfs(tids),
                                  np.asarray(khg_tm.transition_id_to_pdf_array())[1:])


def test_worked_example_of_the_spec():
    ours = parse_text(str(khg_transition_model("mixed")))
    assert ours.transition_id_to_pdf_array()[1:].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]


def test_text_round_trip_is_character_identical(khg_tm):
    text = str(khg_tm)
    assert parse_text(text).to_bytes(binary=False).decode() == text


def test_binary_text_binary_is_byte_identical(khg_tm):
    binary = BINARY_HEADER + parse_text(str(khg_tm)).to_bytes(binary=True)
    from_binary = TransitionModel.read(KaldiReader.from_bytes(binary))
    text = from_binary.to_bytes(binary=False).decode()
    assert text == str(khg_tm)
    assert BINARY_HEADER + parse_text(text).to_bytes(binary=True) == binary


def test_binary_layout_starts_like_kaldi():
    binary = parse_text(str(khg_transition_model("mixed"))).to_bytes(binary=True)
    # "<TransitionModel> <Topology> " then WriteIntegerVector(phones): 04, raw count 3, raw ints.
    head = b"<TransitionModel> <Topology> \x04" + np.asarray([3, 1, 2, 3], "<i4").tobytes()
    assert binary.startswith(head)
    assert binary.endswith(b"</LogProbs> </TransitionModel> ")


def test_read_transition_model_from_gmm_mdl_prefix(tmp_path):
    ours = parse_text(str(khg_transition_model("mixed")))
    mdl = tmp_path / "final.mdl"
    mdl.write_bytes(BINARY_HEADER + ours.to_bytes(True) + b"<DIMENSION> \x04\x03\x00\x00\x00 rest of a GMM")
    got = read_transition_model(str(mdl))
    np.testing.assert_array_equal(got.transition_id_to_pdf_array(), ours.transition_id_to_pdf_array())
    text_mdl = tmp_path / "text.mdl"
    text_mdl.write_text(str(khg_transition_model("mixed")) + "<DIMENSION> 3 ...")
    assert read_transition_model(str(text_mdl)).to_bytes(True) == ours.to_bytes(True)


def test_out_of_range_transition_id_is_named():
    ours = parse_text(str(khg_transition_model("mixed")))
    with pytest.raises(KaldiFormatError, match=r"ali\.1\.gz: utt7: transition-id 17 out of range 1\.\.16"):
        ours.tids_to_pdfs([1, 17], what="ali.1.gz: utt7")
