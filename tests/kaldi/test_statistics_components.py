"""StatisticsExtractionComponent and StatisticsPoolingComponent: Kaldi's Write order (binary and
text), reading back, nnet3-init semantics, and their time rules against a naive transcription of
Kaldi's IsComputable/GetInputIndexes (src/nnet3/nnet-general-component.cc;
docs/kaldi-formats.md 4.25)."""
import struct

import pytest

from kaldi_avg.kaldi.nnet3.components import (
    ComponentError,
    StatisticsExtractionComponent,
    StatisticsPoolingComponent,
)
from kaldi_avg.kaldi.nnet3.config import NetworkConfigError

from .test_components import from_config, read_all, to_bytes, to_text

# Lines as the stats-layer writes them (tests/data/xconfig/small_xvector), trailing blank included.
EXTRACTION = ("component name=s-extraction-12-12 type=StatisticsExtractionComponent input-dim=12 "
              "input-period=3 output-period=6 include-variance=false ")
POOLING = ("component name=s-pooling-0-60 type=StatisticsPoolingComponent input-dim=33 input-period=1 "
           "left-context=0 right-context=60 num-log-count-features=0 output-stddevs=true ")


def test_text_follows_kaldis_write():
    assert to_text(from_config(EXTRACTION)) == (
        "<StatisticsExtractionComponent> <InputDim> 12 <InputPeriod> 3 <OutputPeriod> 6 "
        "<IncludeVarinance> F </StatisticsExtractionComponent> ")
    assert to_text(from_config(POOLING)) == (
        "<StatisticsPoolingComponent> <InputDim> 33 <InputPeriod> 1 <LeftContext> 0 <RightContext> 60 "
        "<NumLogCountFeatures> 0 <OutputStddevs> T <VarianceFloor> 1e-10 </StatisticsPoolingComponent> ")


def test_binary_follows_kaldis_write():
    def i32(v):
        return b"\x04" + struct.pack("<i", v)
    want = (b"<StatisticsPoolingComponent> <InputDim> " + i32(33) + b"<InputPeriod> " + i32(1)
            + b"<LeftContext> " + i32(0) + b"<RightContext> " + i32(60) + b"<NumLogCountFeatures> "
            + i32(0) + b"<OutputStddevs> T<VarianceFloor> \x04" + struct.pack("<f", 1e-10)
            + b"</StatisticsPoolingComponent> ")
    assert to_bytes(from_config(POOLING), True) == want


def test_reads_a_hand_written_kaldi_text_form():
    # Kaldi's reader also takes the opening token of the body without its '<'.
    text = (b"<StatisticsPoolingComponent> InputDim> 13 <InputPeriod> 9 <LeftContext> 99 <RightContext> 99 "
            b"<NumLogCountFeatures> 2 <OutputStddevs> F <VarianceFloor> 0.001 </StatisticsPoolingComponent> ")
    comp = read_all(text, False)
    assert (comp.in_dim, comp.input_period, comp.left_context, comp.right_context) == (13, 9, 99, 99)
    assert (comp.num_log_count_features, comp.output_stddevs) == (2, False)
    assert (comp.input_dim(), comp.output_dim()) == (13, 14)
    assert to_text(comp) == text.decode().replace(" InputDim>", " <InputDim>")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("line", [EXTRACTION, POOLING])
def test_round_trip(line, binary):
    data = to_bytes(from_config(line), binary)
    assert to_bytes(read_all(data, binary), binary) == data


def test_config_defaults_and_info():
    e = from_config("component name=e type=StatisticsExtractionComponent input-dim=4")
    assert (e.input_period, e.output_period, e.include_variance, e.output_dim()) == (1, 1, True, 9)
    assert e.info() == "type=StatisticsExtractionComponent, input-dim=4, output-dim=9"
    # Kaldi's constructor default output-stddevs=false (its header comment says true).
    p = from_config("component name=p type=StatisticsPoolingComponent input-dim=9 right-context=5 left-context=0")
    assert (p.input_period, p.num_log_count_features, p.output_stddevs) == (1, 0, False)
    assert p.variance_floor == pytest.approx(1e-10)
    assert p.info() == "type=StatisticsPoolingComponent, input-dim=9, output-dim=8"


@pytest.mark.parametrize("line", [
    "component name=e type=StatisticsExtractionComponent input-dim=4 input-period=2 output-period=5",
    "component name=e type=StatisticsExtractionComponent input-dim=0",
    "component name=p type=StatisticsPoolingComponent input-dim=9 right-context=5",   # left-context -1
    "component name=p type=StatisticsPoolingComponent input-dim=9 left-context=0 right-context=0",
    "component name=p type=StatisticsPoolingComponent input-dim=9 left-context=3 right-context=6 input-period=2",
    "component name=p type=StatisticsPoolingComponent input-dim=8 left-context=0 right-context=6 output-stddevs=true",
    "component name=p type=StatisticsPoolingComponent input-dim=9 left-context=0 right-context=6 variance-floor=1",
    "component name=p type=StatisticsPoolingComponent input-dim=9 left-context=0 right-context=6 scale=2",
])
def test_invalid_initializers_are_refused(line):
    with pytest.raises((ComponentError, NetworkConfigError)):
        from_config(line)


# -- time rules -----------------------------------------------------------------------------------
# Kaldi's code, transcribed naively per output frame t (C's t / p rounds toward zero, hence the fix),
# with the input existing on the frames lo..hi.

def _block_start(t, period):
    start = period * int(t / period)
    return start - period if start > t else start


def kaldi_input_indexes(c, t):
    if isinstance(c, StatisticsExtractionComponent):
        start = _block_start(t, c.output_period)
        return list(range(start, start + c.output_period, c.input_period))
    return list(range(t - c.left_context, t + c.right_context + 1, c.input_period))


def kaldi_is_computable(c, t, lo, hi):
    if isinstance(c, StatisticsPoolingComponent) and t % c.input_period != 0:
        return False
    return any(lo <= u <= hi for u in kaldi_input_indexes(c, t))


COMPONENTS = [StatisticsExtractionComponent(in_dim=2, input_period=ip, output_period=p, include_variance=True)
              for ip, p in ((1, 1), (1, 4), (3, 9), (2, 6))] + \
             [StatisticsPoolingComponent(in_dim=3, input_period=ip, left_context=left, right_context=right)
              for ip, left, right in ((1, 0, 7), (3, 9, 6), (9, 99, 99), (2, 4, 0))]


def _id(c):
    if isinstance(c, StatisticsExtractionComponent):
        return f"extraction-{c.input_period}-{c.output_period}"
    return f"pooling-{c.input_period}-{c.left_context}-{c.right_context}"


@pytest.mark.parametrize("c", COMPONENTS, ids=_id)
def test_computable_frames_are_kaldis(c):
    """Extraction: exactly Kaldi's computable frames. Pooling: Kaldi's computable frames are the
    multiples of input-period within the span (a frame between them holds the value of the
    multiple below it, see the component)."""
    step = 1 if isinstance(c, StatisticsExtractionComponent) else c.input_period
    for lo in range(-7, 8):
        for hi in range(lo, lo + 12):
            want = [t for t in range(-150, 150) if kaldi_is_computable(c, t, lo, hi)]
            first, last = c.computable_frames(lo, hi)
            assert [t for t in range(first, last + 1) if t % step == 0] == want, (lo, hi)


@pytest.mark.parametrize("c", COMPONENTS, ids=_id)
def test_input_frames_span_kaldis_input_indexes(c):
    step = 1 if isinstance(c, StatisticsExtractionComponent) else c.input_period
    for lo in range(-18, 18, step):   # multiples of every input-period above
        for hi in range(lo, lo + 20, step):
            frames = [u for t in range(lo, hi + 1, step) for u in kaldi_input_indexes(c, t)]
            assert c.input_frames(lo, hi) == (min(frames), max(frames)), (lo, hi)
