"""RestrictedAttentionComponent: Kaldi's Write order (text and binary, statistics as doubles),
reading back, nnet3-init semantics, the Info line, the window it reads and the context it adds
(docs/kaldi-formats.md 4.24; Kaldi's src/nnet3/nnet-attention-component.cc)."""
import struct

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.components import ComponentError, RestrictedAttentionComponent
from kaldi_avg.kaldi.nnet3.config import NetworkConfigError
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.descriptor import NodeRef, to_string
from kaldi_avg.kaldi.nnet3.nnet import Nnet

from .test_components import from_config, read_all, to_bytes, to_text

# The line Kaldi's xconfig writes for attention-relu-renorm-layer (tests/data/xconfig/small_attention).
KALDI_LINE = ("component name=a.attention type=RestrictedAttentionComponent value-dim=3 key-dim=4 "
              "num-left-inputs=2 num-right-inputs=1 num-left-inputs-required=-1 "
              "num-right-inputs-required=-1 output-context=True time-stride=2 num-heads=2 key-scale=0.5")


def _with_stats():
    """Statistics as a Kaldi-trained model has them: count, per-head entropy, per-head posteriors."""
    return RestrictedAttentionComponent(
        num_heads=2, key_dim=1, value_dim=1, num_left_inputs=1, num_right_inputs=0,
        num_left_inputs_required=0, output_context=False, key_scale=0.5, stats_count=4.0,
        entropy_stats=[2.0, 1.0], posterior_stats=[[1.0, 3.0], [2.0, 2.0]])


def test_fresh_text_follows_kaldis_write():
    comp = from_config(KALDI_LINE)
    assert to_text(comp) == (
        "<RestrictedAttentionComponent> <NumHeads> 2 <KeyDim> 4 <ValueDim> 3 <NumLeftInputs> 2 "
        "<NumRightInputs> 1 <TimeStride> 2 <NumLeftInputsRequired> 2 <NumRightInputsRequired> 1 "
        "<OutputContext> T <KeyScale> 0.5 <StatsCount> 0 <EntropyStats>  [ ]\n"
        "<PosteriorStats>  [ ]\n</RestrictedAttentionComponent> ")
    assert (comp.input_dim(), comp.output_dim()) == (2 * (4 + 3 + 4 + 4), 2 * (3 + 4))


def test_binary_statistics_are_doubles():
    data = to_bytes(_with_stats(), True)
    i32 = lambda v: b"\x04" + struct.pack("<i", v)
    assert data.startswith(b"<RestrictedAttentionComponent> <NumHeads> " + i32(2) + b"<KeyDim> " + i32(1))
    assert (b"<KeyScale> \x04" + struct.pack("<f", 0.5) + b"<StatsCount> \x08" + struct.pack("<d", 4.0)
            + b"<EntropyStats> DV " + i32(2) + struct.pack("<2d", 2.0, 1.0)
            + b"<PosteriorStats> DM " + i32(2) + i32(2) + struct.pack("<4d", 1.0, 3.0, 2.0, 2.0)
            + b"</RestrictedAttentionComponent> ") in data
    assert b"<OutputContext> F<KeyScale>" in data


def test_reads_kaldis_text_with_statistics():
    text = (b"<RestrictedAttentionComponent> <NumHeads> 2 <KeyDim> 1 <ValueDim> 1 <NumLeftInputs> 1 "
            b"<NumRightInputs> 0 <TimeStride> 1 <NumLeftInputsRequired> 0 <NumRightInputsRequired> 0 "
            b"<OutputContext> F <KeyScale> 0.5 <StatsCount> 4 <EntropyStats>  [ 2 1 ]\n"
            b"<PosteriorStats>  [\n  1 3 \n  2 2 ]\n</RestrictedAttentionComponent> ")
    comp = read_all(text, False)
    assert to_bytes(comp, False) == text
    assert to_bytes(comp, True) == to_bytes(_with_stats(), True)
    assert comp.posterior_stats.dtype == np.float64


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("make", [lambda: from_config(KALDI_LINE), _with_stats], ids=["fresh", "stats"])
def test_round_trip(make, binary):
    comp = make()
    comp.validate()
    data = to_bytes(comp, binary)
    again = read_all(data, binary)
    assert to_bytes(again, binary) == data
    assert again.info() == comp.info()


def test_binary_keeps_double_precision():
    comp = _with_stats()
    comp.entropy_stats = np.array([1.0 / 3.0, 0.1])
    again = read_all(to_bytes(comp, True), True)
    assert np.array_equal(again.entropy_stats, [1.0 / 3.0, 0.1])


def test_info_lines():
    assert from_config(KALDI_LINE).info() == (
        "type=RestrictedAttentionComponent, input-dim=30, output-dim=14, num-heads=2, time-stride=2, "
        "key-dim=4, value-dim=3, num-left-inputs=2, num-right-inputs=1, context-dim=4, "
        "num-left-inputs-required=2, num-right-inputs-required=1, output-context=true, key-scale=0.5")
    assert _with_stats().info().endswith(
        "output-context=false, key-scale=0.5, entropy=0.5,0.25, posterior-stats[0]=0.25,0.75, "
        "posterior-stats[1]=0.5,0.5, stats-count=4")


def test_nnet3_init_defaults():
    comp = from_config("component name=a type=RestrictedAttentionComponent key-dim=3 value-dim=2 "
                       "num-left-inputs=1 num-right-inputs=2 num-right-inputs-required=0")
    assert (comp.num_heads, comp.time_stride, comp.output_context) == (1, 1, True)
    assert (comp.num_left_inputs_required, comp.num_right_inputs_required) == (1, 0)
    assert comp.key_scale == float(np.float32(1.0 / np.sqrt(3.0)))
    assert comp.stats_count == 0.0 and comp.entropy_stats.shape == (0,) and comp.posterior_stats.shape == (0, 0)


def test_zero_stats_keeps_dimensions():
    comp = _with_stats()
    comp.zero_stats()
    assert comp.stats_count == 0.0 and not comp.entropy_stats.any() and comp.posterior_stats.shape == (2, 2)


def test_window_marks_the_optional_frames():
    comp = from_config("component name=a type=RestrictedAttentionComponent key-dim=1 value-dim=1 "
                       "num-left-inputs=2 num-right-inputs=1 num-left-inputs-required=1 "
                       "num-right-inputs-required=0 time-stride=3")
    assert to_string(comp.input_descriptor(NodeRef("x"))) == \
        "Append(IfDefined(Offset(x, -6)), Offset(x, -3), x, IfDefined(Offset(x, 3)))"


def test_context_counts_only_the_required_frames():
    nnet = Nnet.from_config("\n".join([
        "input-node name=input dim=2",
        "component name=affine type=NaturalGradientAffineComponent input-dim=2 output-dim=9",
        "component-node name=affine component=affine input=input",
        "component name=att type=RestrictedAttentionComponent key-dim=1 value-dim=1 num-left-inputs=3 "
        "num-right-inputs=2 num-left-inputs-required=1 num-right-inputs-required=1 time-stride=2",
        "component-node name=att component=att input=affine",
        "output-node name=output input=att"]) + "\n")
    assert model_context(nnet) == (2, 2)


@pytest.mark.parametrize("options, message", [
    ("key-dim=2 value-dim=2 num-left-inputs=1", "must be defined"),
    ("key-dim=2 value-dim=2 num-left-inputs=0 num-right-inputs=0", "not both 0"),
    ("key-dim=2 value-dim=2 num-left-inputs=1 num-right-inputs=1 num-left-inputs-required=2", "required"),
    ("key-dim=2 value-dim=2 num-left-inputs=1 num-right-inputs=1 time-stride=0", "time-stride"),
    ("key-dim=2 value-dim=2 num-left-inputs=1 num-right-inputs=1 key-scale=2", "key-scale"),
    ("key-dim=0 value-dim=2 num-left-inputs=1 num-right-inputs=1", "key-dim"),
    ("key-dim=2 value-dim=2 num-left-inputs=1 num-right-inputs=1 dim=4", "dim"),
])
def test_invalid_lines_are_refused(options, message):
    with pytest.raises((ComponentError, NetworkConfigError), match=message):
        from_config(f"component name=a type=RestrictedAttentionComponent {options}")
