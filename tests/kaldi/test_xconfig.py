"""xconfig -> config lines, checked against the expansions verified with Kaldi
(docs/kaldi-formats.md 5.5-5.10) and against Kaldi's generator formats."""
import os

import pytest

from kaldi_avg.kaldi.nnet3.config import ConfigLine
from kaldi_avg.kaldi.nnet3.descriptor import parse_descriptor, to_string
from kaldi_avg.kaldi.xconfig import XconfigError, get_config_lines, parse_xconfig, substitute, write_config_dir

NODE_TYPES = ("input-node", "component-node", "dim-range-node", "output-node")

MAIN_XCONFIG = """\
input dim=40 name=input
fixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2) affine-transform-file=configs/lda.mat
fast-lstmp-layer name=fastlstm1 delay=-1 decay-time=20 cell-dim=256 recurrent-projection-dim=64 non-recurrent-projection-dim=64
fast-lstmp-layer name=fastlstm2 delay=-2 decay-time=20 cell-dim=256 recurrent-projection-dim=64 non-recurrent-projection-dim=64
output-layer name=output output-delay=5 dim=NUM_PDFS max-change=1.5
"""

SPEC_5_10_XCONFIG = """\
input dim=4 name=input
fixed-affine-layer name=lda input=Append(-1,0,1) affine-transform-file=configs/lda.mat
fast-lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=2 non-recurrent-projection-dim=2 delay=-1 decay-time=20
fast-lstm-layer name=lstm2 cell-dim=6 delay=-2
output-layer name=output dim=8 output-delay=2
"""

# The model config section Kaldi writes after `nnet3-init final.config` (5.10, verified).
SPEC_5_10_MODEL_NODES = """\
input-node name=input dim=4
component-node name=lda component=lda input=Append(Offset(input, -1), input, Offset(input, 1))
component-node name=lstm1.W_all component=lstm1.W_all input=Append(lda, IfDefined(Offset(lstm1.r_trunc, -1)))
component-node name=lstm1.lstm_nonlin component=lstm1.lstm_nonlin input=Append(lstm1.W_all, IfDefined(Offset(lstm1.c_trunc, -1)))
dim-range-node name=lstm1.c input-node=lstm1.lstm_nonlin dim-offset=0 dim=8
dim-range-node name=lstm1.m input-node=lstm1.lstm_nonlin dim-offset=8 dim=8
component-node name=lstm1.rp component=lstm1.W_rp input=lstm1.m
dim-range-node name=lstm1.r input-node=lstm1.rp dim-offset=0 dim=2
component-node name=lstm1.cr_trunc component=lstm1.cr_trunc input=Append(lstm1.c, lstm1.r)
dim-range-node name=lstm1.c_trunc input-node=lstm1.cr_trunc dim-offset=0 dim=8
dim-range-node name=lstm1.r_trunc input-node=lstm1.cr_trunc dim-offset=8 dim=2
component-node name=lstm2.W_all component=lstm2.W_all input=Append(lstm1.rp, IfDefined(Offset(lstm2.m_trunc, -2)))
component-node name=lstm2.lstm_nonlin component=lstm2.lstm_nonlin input=Append(lstm2.W_all, IfDefined(Offset(lstm2.c_trunc, -2)))
dim-range-node name=lstm2.m input-node=lstm2.lstm_nonlin dim-offset=6 dim=6
component-node name=lstm2.cm_trunc component=lstm2.cm_trunc input=lstm2.lstm_nonlin
dim-range-node name=lstm2.c_trunc input-node=lstm2.cm_trunc dim-offset=0 dim=6
dim-range-node name=lstm2.m_trunc input-node=lstm2.cm_trunc dim-offset=6 dim=6
component-node name=output.affine component=output.affine input=lstm2.m
component-node name=output.log-softmax component=output.log-softmax input=output.affine
output-node name=output input=Offset(output.log-softmax, 2) objective=linear
""".splitlines()

# Non-comment lines of one layer, as quoted (verified) in 5.6 and 5.7.
FAST_LSTM_TEMPLATE = """\
component name={L}.W_all type=NaturalGradientAffineComponent input-dim={IC} output-dim={C4}  max-change=1.5 
component name={L}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C}  max-change=0.75 
component name={L}.cm_trunc type=BackpropTruncationComponent dim={C2} clipping-threshold=30.0 zeroing-threshold=15.0 zeroing-interval=20 recurrence-interval={ad} scale={s}
component-node name={L}.W_all component={L}.W_all input=Append({X}, IfDefined(Offset({L}.m_trunc, {d})))
component-node name={L}.lstm_nonlin component={L}.lstm_nonlin input=Append({L}.W_all, IfDefined(Offset({L}.c_trunc, {d})))
dim-range-node name={L}.m input-node={L}.lstm_nonlin dim-offset={C} dim={C}
component-node name={L}.cm_trunc component={L}.cm_trunc input={L}.lstm_nonlin
dim-range-node name={L}.c_trunc input-node={L}.cm_trunc dim-offset=0 dim={C}
dim-range-node name={L}.m_trunc input-node={L}.cm_trunc dim-offset={C} dim={C}"""

FAST_LSTMP_TEMPLATE = """\
component name={L}.W_all type=NaturalGradientAffineComponent input-dim={IR} output-dim={C4}  max-change=1.5 
component name={L}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C} use-dropout=false  max-change=0.75 
component name={L}.cr_trunc type=BackpropTruncationComponent dim={CR} clipping-threshold=30.0 zeroing-threshold=15.0 zeroing-interval=20 recurrence-interval={ad} scale={s}
component name={L}.W_rp type=NaturalGradientAffineComponent input-dim={C} output-dim={RP}  max-change=1.5 
component-node name={L}.W_all component={L}.W_all input=Append({X}, IfDefined(Offset({L}.r_trunc, {d})))
component-node name={L}.lstm_nonlin component={L}.lstm_nonlin input=Append({L}.W_all, IfDefined(Offset({L}.c_trunc, {d})))
dim-range-node name={L}.c input-node={L}.lstm_nonlin dim-offset=0 dim={C}
dim-range-node name={L}.m input-node={L}.lstm_nonlin dim-offset={C} dim={C}
component-node name={L}.rp component={L}.W_rp input={L}.m
dim-range-node name={L}.r input-node={L}.rp dim-offset=0 dim={R}
component-node name={L}.cr_trunc component={L}.cr_trunc input=Append({L}.c, {L}.r)
dim-range-node name={L}.c_trunc input-node={L}.cr_trunc dim-offset=0 dim={C}
dim-range-node name={L}.r_trunc input-node={L}.cr_trunc dim-offset={C} dim={R}"""


def lines_of(text, config="final"):
    return get_config_lines(parse_xconfig(text, "test.xconfig"))[config]


def layer_lines(lines, name):
    """The non-comment lines that define components/nodes named `name.*`."""
    return [line for line in lines if not line.startswith("#")
            and ConfigLine.parse(line).values["name"].startswith(name + ".")]


def canonical_node_line(line):
    """A node line as Kaldi re-prints it inside a model (normalized descriptor, one blank)."""
    cl = ConfigLine.parse(line)
    values = {k: to_string(parse_descriptor(v)) if k == "input" else v
              for k, v in cl.values.items()}
    return " ".join([cl.first] + [f"{k}={v}" for k, v in values.items()])


def error_of(text):
    with pytest.raises(XconfigError) as e:
        get_config_lines(parse_xconfig(text, "net.xconfig"))
    return str(e.value)


# ----------------------------------------------------------------- verified expansions
def test_spec_5_10_node_lines_equal_the_model_written_by_kaldi():
    nodes = [canonical_node_line(line) for line in lines_of(SPEC_5_10_XCONFIG)
             if line.split(" ", 1)[0] in NODE_TYPES]
    assert nodes == SPEC_5_10_MODEL_NODES


def test_spec_5_10_component_types_and_dims():
    final = {cl.values["name"]: cl.values for cl in map(ConfigLine.parse, lines_of(SPEC_5_10_XCONFIG))
             if cl and cl.first == "component"}
    assert list(final) == ["lda", "lstm1.W_all", "lstm1.lstm_nonlin", "lstm1.cr_trunc",
                           "lstm1.W_rp", "lstm2.W_all", "lstm2.lstm_nonlin", "lstm2.cm_trunc",
                           "output.affine", "output.log-softmax"]
    assert final["lda"] == {"name": "lda", "type": "FixedAffineComponent",
                            "matrix": "configs/lda.mat"}
    ref_lda = [line for line in lines_of(SPEC_5_10_XCONFIG, "ref") if "name=lda " in line][0]
    assert ref_lda == "component name=lda type=FixedAffineComponent input-dim=12 output-dim=12"
    expected = {"lstm1.W_all": ("NaturalGradientAffineComponent", 14, 32),
                "lstm1.W_rp": ("NaturalGradientAffineComponent", 8, 4),
                "lstm2.W_all": ("NaturalGradientAffineComponent", 10, 24),
                "output.affine": ("NaturalGradientAffineComponent", 6, 8)}
    for name, (kind, i, o) in expected.items():
        assert (final[name]["type"], int(final[name]["input-dim"]),
                int(final[name]["output-dim"])) == (kind, i, o)
    assert final["lstm1.lstm_nonlin"]["cell-dim"] == "8"
    assert final["lstm2.lstm_nonlin"]["cell-dim"] == "6"
    assert (final["lstm1.cr_trunc"]["dim"], float(final["lstm1.cr_trunc"]["scale"])) == ("10", 0.95)
    assert (final["lstm2.cm_trunc"]["dim"], float(final["lstm2.cm_trunc"]["scale"])) == ("12", 1.0)
    assert final["output.log-softmax"] == {"name": "output.log-softmax",
                                           "type": "LogSoftmaxComponent", "dim": "8"}
    # nnet3-info reports 878 parameters: affine out*(in+1), LSTM peepholes 3*C.
    affine = sum(int(v["output-dim"]) * (int(v["input-dim"]) + 1) for v in final.values()
                 if v["type"] == "NaturalGradientAffineComponent")
    assert affine + 3 * 8 + 3 * 6 == 878


def test_output_layer_after_fast_lstm_reads_m_and_after_fast_lstmp_reads_rp():
    final = lines_of(SPEC_5_10_XCONFIG)
    assert "component-node name=output.affine component=output.affine input=lstm2.m" in final
    assert ("component-node name=lstm2.W_all component=lstm2.W_all "
            "input=Append(lstm1.rp, IfDefined(Offset(lstm2.m_trunc, -2)))") in final


def test_fast_lstm_lines_match_spec_5_6():
    text = "input dim=5 name=input\nfast-lstm-layer name=L cell-dim=7 delay=-3 decay-time=30\n" \
           "output-layer name=output dim=3\n"
    expected = FAST_LSTM_TEMPLATE.format(L="L", X="input", IC=12, C=7, C2=14, C4=28, d=-3, ad=3,
                                         s=1.0 - 3 / 30.0)
    assert layer_lines(lines_of(text), "L") == expected.splitlines()


def test_fast_lstm_cell_dim_defaults_to_input_dim():
    text = "input dim=5 name=input\nfast-lstm-layer name=L\noutput-layer name=output dim=3\n"
    expected = FAST_LSTM_TEMPLATE.format(L="L", X="input", IC=10, C=5, C2=10, C4=20, d=-1, ad=1,
                                         s=1.0)
    assert layer_lines(lines_of(text), "L") == expected.splitlines()


def test_main_use_case_matches_spec_5_5_and_5_7():
    text = substitute(MAIN_XCONFIG, {"NUM_PDFS": 42})
    layers = parse_xconfig(text, "network.xconfig")
    lines = get_config_lines(layers)
    lda_input = ("Append(Offset(input, -2), Offset(input, -1), input, Offset(input, 1), "
                 "Offset(input, 2))")
    assert lines["init"] == [
        "input-node name=input dim=40",
        "component name=lda.delayed type=NoOpComponent dim=200",
        f"component-node name=lda.delayed component=lda.delayed input={lda_input}",
        "output-node name=output input=Offset(lda.delayed, 5)"]
    for i, (x, d, s) in enumerate([("lda", -1, 0.95), ("fastlstm1.rp", -2, 0.9)], 1):
        expected = FAST_LSTMP_TEMPLATE.format(L=f"fastlstm{i}", X=x, IR=(200 if i == 1 else 128) + 64,
                                              C=256, C4=1024, CR=320, R=64, RP=128, d=d, ad=-d, s=s)
        assert layer_lines(lines["final"], f"fastlstm{i}") == expected.splitlines()
    head = ["input-node name=input dim=40",
            "component name=lda type=FixedAffineComponent matrix=configs/lda.mat",
            f"component-node name=lda component=lda input={lda_input}"]
    tail = ["component name=output.affine type=NaturalGradientAffineComponent input-dim=128 "
            "output-dim=42  max-change=1.5 param-stddev=0.0 bias-stddev=0.0",
            "component-node name=output.affine component=output.affine input=fastlstm2.rp",
            "component name=output.log-softmax type=LogSoftmaxComponent dim=42",
            "component-node name=output.log-softmax component=output.log-softmax "
            "input=output.affine",
            "output-node name=output input=Offset(output.log-softmax, 5) objective=linear"]
    assert lines["final"][:3] == head and lines["final"][-5:] == tail
    assert lines["ref"][1] == ("component name=lda type=FixedAffineComponent input-dim=200 "
                               "output-dim=200")
    assert lines["ref"][2:] == lines["final"][2:]


def test_fast_lstmp_comment_lines_are_kaldis():
    text = substitute(MAIN_XCONFIG, {"NUM_PDFS": 42})
    final = lines_of(text)
    start = final.index("##  Begin LSTM layer 'fastlstm1'")
    end = final.index("### End LSTM Layer 'fastlstm1'")
    comments = [line for line in final[start:end + 1] if line.startswith("#")]
    assert comments == [
        "##  Begin LSTM layer 'fastlstm1'",
        "# Gate control: contains W_i, W_f, W_c and W_o matrices as blocks.",
        "# The core LSTM nonlinearity, implemented as a single component.",
        "# Input = (i_part, f_part, c_part, o_part, c_{t-1}), output = (c_t, m_t)",
        "# See cu-math.h:ComputeLstmNonlinearity() for details.",
        "# Component for backprop truncation, to avoid gradient blowup in long training examples.",
        "# Component specific to 'projected' LSTM (LSTMP), contains both recurrent",
        "# and non-recurrent projections",
        "###  Nodes for the components above.",
        "# fastlstm1.rp is the output node of this layer (if we're not including batchnorm)",
        "# Note: it's not 100% efficient that we have to stitch the c",
        "# and r back together to truncate them but it probably",
        "# makes the deriv truncation more accurate .",
        "### End LSTM Layer 'fastlstm1'"]
    assert final[start + 1:end].count("###  Nodes for the components above.") == 1


def test_ivector_variant_matches_spec_5_5():
    text = substitute(MAIN_XCONFIG, {"NUM_PDFS": 42}).replace(
        "input dim=40 name=input", "input dim=100 name=ivector\ninput dim=40 name=input").replace(
        "Append(-2,-1,0,1,2)", "Append(-2,-1,0,1,2,ReplaceIndex(ivector, t, 0))")
    lines = get_config_lines(parse_xconfig(text, "network.xconfig"))
    spliced = ("Append(Offset(input, -2), Offset(input, -1), input, Offset(input, 1), "
               "Offset(input, 2), ReplaceIndex(ivector, t, 0))")
    assert lines["init"] == [
        "input-node name=ivector dim=100", "input-node name=input dim=40",
        "component name=lda.delayed type=NoOpComponent dim=300",
        f"component-node name=lda.delayed component=lda.delayed input={spliced}",
        "output-node name=output input=Offset(lda.delayed, 5)"]
    assert lines["final"][:4] == [
        "input-node name=ivector dim=100", "input-node name=input dim=40",
        "component name=lda type=FixedAffineComponent matrix=configs/lda.mat",
        f"component-node name=lda component=lda input={spliced}"]
    assert "input-dim=364 output-dim=1024" in lines["final"][6]  # 300 + R
    assert lines["ref"][2] == "component name=lda type=FixedAffineComponent input-dim=300 output-dim=300"


def test_fixed_affine_without_delay_outputs_its_input_in_init_and_dim_option():
    text = ("input dim=4 name=input\nfixed-affine-layer name=lda input=Append(-1,0,1) dim=5 "
            "affine-transform-file=x.mat\noutput-layer name=output dim=3\n")
    lines = lines_of(text, "init")
    assert lines == ["input-node name=input dim=4",
                     "output-node name=output input=Append(Offset(input, -1), input, Offset(input, 1))"]
    assert "component name=lda type=FixedAffineComponent input-dim=12 output-dim=5" in \
        lines_of(text, "ref")
    assert "input-dim=5 " in lines_of(text)[-5]


def test_no_init_config_without_fixed_affine_layer():
    assert lines_of("input dim=4 name=input\noutput-layer name=output dim=3\n", "init") == []


# --------------------------------------------------------------- other layer families
def test_lstmp_layer_lines():
    text = ("input dim=3 name=input\nlstmp-layer name=L cell-dim=4 recurrent-projection-dim=2 "
            "non-recurrent-projection-dim=1 delay=-2 decay-time=10\noutput-layer name=output dim=3\n")
    pes = " max-change=0.75  param-mean=0.0 param-stddev=1.0  "
    trunc = ("clipping-threshold=30.0 zeroing-threshold=15.0 zeroing-interval=20 "
             "recurrence-interval=2 scale=0.8")
    sr = "self-repair-scale=0.0000100000"
    rec = "input=Append(input, IfDefined(Offset(L.r_t, -2)))"
    aff = "type=NaturalGradientAffineComponent input-dim=5 output-dim=4  max-change=0.75  "
    assert lines_of(text)[1:-5] == [
        "# Input gate control : W_i* matrices",
        f"component name=L.W_i.xr {aff}",
        "# note : the cell outputs pass through a diagonal matrix",
        f"component name=L.w_i.c type=NaturalGradientPerElementScaleComponent dim=4 {pes}",
        "# Forget gate control : W_f* matrices",
        f"component name=L.W_f.xr {aff}",
        "# note : the cell outputs pass through a diagonal matrix",
        f"component name=L.w_f.c type=NaturalGradientPerElementScaleComponent  dim=4 {pes}",
        "#  Output gate control : W_o* matrices",
        f"component name=L.W_o.xr {aff}",
        "# note : the cell outputs pass through a diagonal matrix",
        f"component name=L.w_o.c type=NaturalGradientPerElementScaleComponent dim=4 {pes}",
        "# Cell input matrices : W_c* matrices",
        f"component name=L.W_c.xr {aff}",
        "# Defining the non-linearities",
        f"component name=L.i type=SigmoidComponent dim=4 {sr}",
        f"component name=L.f type=SigmoidComponent dim=4 {sr}",
        f"component name=L.o type=SigmoidComponent dim=4 {sr}",
        f"component name=L.g type=TanhComponent dim=4 {sr}",
        f"component name=L.h type=TanhComponent dim=4 {sr}",
        "# Defining the components for other cell computations",
        "component name=L.c1 type=ElementwiseProductComponent input-dim=8 output-dim=4",
        "component name=L.c2 type=ElementwiseProductComponent input-dim=8 output-dim=4",
        "component name=L.m type=ElementwiseProductComponent input-dim=8 output-dim=4",
        f"component name=L.c type=BackpropTruncationComponent dim=4 {trunc}",
        "component-node name=L.c_t component=L.c input=Sum(L.c1_t, L.c2_t)",
        "# i_t",
        f"component-node name=L.i1_t component=L.W_i.xr {rec}",
        "component-node name=L.i2_t component=L.w_i.c  input=IfDefined(Offset(L.c_t, -2))",
        "component-node name=L.i_t component=L.i input=Sum(L.i1_t, L.i2_t)",
        "# f_t",
        f"component-node name=L.f1_t component=L.W_f.xr {rec}",
        "component-node name=L.f2_t component=L.w_f.c  input=IfDefined(Offset(L.c_t, -2))",
        "component-node name=L.f_t component=L.f input=Sum(L.f1_t, L.f2_t)",
        "# o_t",
        f"component-node name=L.o1_t component=L.W_o.xr {rec}",
        "component-node name=L.o2_t component=L.w_o.c input=L.c_t",
        "component-node name=L.o_t component=L.o input=Sum(L.o1_t, L.o2_t)",
        "# h_t",
        "component-node name=L.h_t component=L.h input=L.c_t",
        "# g_t",
        f"component-node name=L.g1_t component=L.W_c.xr {rec}",
        "component-node name=L.g_t component=L.g input=L.g1_t",
        "# parts of c_t",
        "component-node name=L.c1_t component=L.c1  input=Append(L.f_t, IfDefined(Offset(L.c_t, -2)))",
        "component-node name=L.c2_t component=L.c2 input=Append(L.i_t, L.g_t)",
        "# m_t",
        "component-node name=L.m_t component=L.m input=Append(L.o_t, L.h_t)",
        "# projection matrices : Wrm and Wpm",
        "component name=L.W_rp.m type=NaturalGradientAffineComponent input-dim=4 output-dim=3  "
        "max-change=0.75  ",
        f"component name=L.r type=BackpropTruncationComponent dim=2 {trunc}",
        "# r_t and p_t : rp_t will be the output (if we're not doing batchnorm)",
        "component-node name=L.rp_t component=L.W_rp.m input=L.m_t",
        "dim-range-node name=L.r_t_preclip input-node=L.rp_t dim-offset=0 dim=2",
        "component-node name=L.r_t component=L.r input=L.r_t_preclip"]
    assert "component-node name=output.affine component=output.affine input=L.rp_t" in lines_of(text)


def test_lstm_layer_differs_from_lstmp_as_kaldi_prints_it():
    text = ("input dim=3 name=input\nlstm-layer name=L cell-dim=4 l2-regularize=0.01\n"
            "output-layer name=output dim=3\n")
    final = lines_of(text)
    pes = " max-change=0.75 param-mean=0.0 param-stddev=1.0  l2-regularize=0.01 "
    assert final[1] == "### Begin LSTM layer 'L'"
    assert final[3] == ("component name=L.W_i.xr type=NaturalGradientAffineComponent input-dim=7 "
                        "output-dim=4  max-change=0.75  l2-regularize=0.01 ")
    assert final[5] == f"component name=L.w_i.c type=NaturalGradientPerElementScaleComponent dim=4 {pes} "
    assert final[9] == f"component name=L.w_f.c type=NaturalGradientPerElementScaleComponent dim=4 {pes}"
    assert final[13] == f"component name=L.w_o.c type=NaturalGradientPerElementScaleComponent  dim=4 {pes}"
    assert final[-8:-4] == [
        "component name=L.r type=BackpropTruncationComponent dim=4 clipping-threshold=30.0 "
        "zeroing-threshold=15.0 zeroing-interval=20 recurrence-interval=1 scale=1.0",
        "component-node name=L.r_t component=L.r input=L.m_t",
        "### End LSTM layer 'L'",
        "component name=output.affine type=NaturalGradientAffineComponent input-dim=4 "
        "output-dim=3  max-change=1.5 param-stddev=0.0 bias-stddev=0.0"]
    assert "component-node name=output.affine component=output.affine input=L.m_t" in final


def test_relu_batchnorm_layer_lines():
    text = ("input dim=3 name=input\nrelu-batchnorm-layer name=tdnn1 dim=8 input=Append(-1,0,1)\n"
            "output-layer name=output dim=3\n")
    assert lines_of(text)[1:7] == [
        "component name=tdnn1.affine type=NaturalGradientAffineComponent input-dim=9 "
        "output-dim=8  max-change=0.75",
        "component-node name=tdnn1.affine component=tdnn1.affine "
        "input=Append(Offset(input, -1), input, Offset(input, 1))",
        "component name=tdnn1.relu type=RectifiedLinearComponent dim=8 self-repair-scale=1e-05",
        "component-node name=tdnn1.relu component=tdnn1.relu input=tdnn1.affine",
        "component name=tdnn1.batchnorm type=BatchNormComponent dim=8 target-rms=1.0",
        "component-node name=tdnn1.batchnorm component=tdnn1.batchnorm input=tdnn1.relu"]
    assert "input-dim=8 output-dim=3 " in lines_of(text)[7]
    assert lines_of(text)[8].endswith("input=tdnn1.batchnorm")


def test_nonlinearity_family_options_and_bottleneck():
    text = ("input dim=6 name=input\nsigmoid-layer name=s dim=5 learning-rate-factor=0.5\n"
            "tanh-layer name=t dim=4 bottleneck-dim=2 ng-affine-options=\"update-period=2\"\n"
            "relu-renorm-layer name=r dim=4 add-log-stddev=true target-rms=0.5\n"
            "batchnorm-layer name=b\noutput name=output objective-type=quadratic\n")
    final = [line for line in lines_of(text) if line.startswith("component ")]
    assert final == [
        "component name=s.affine type=NaturalGradientAffineComponent input-dim=6 output-dim=5  "
        "max-change=0.75 learning-rate-factor=0.5",
        "component name=s.sigmoid type=SigmoidComponent dim=5 self-repair-scale=1e-05",
        "component name=t.linear type=LinearComponent input-dim=5 orthonormal-constraint=1.0 "
        "output-dim=2  max-change=0.75",
        "component name=t.affine type=NaturalGradientAffineComponent input-dim=2 output-dim=4 "
        "update-period=2 max-change=0.75",
        "component name=t.tanh type=TanhComponent dim=4 self-repair-scale=1e-05",
        "component name=r.affine type=NaturalGradientAffineComponent input-dim=4 output-dim=3  "
        "max-change=0.75",
        "component name=r.relu type=RectifiedLinearComponent dim=3 self-repair-scale=1e-05",
        "component name=r.renorm type=NormalizeComponent dim=3 target-rms=0.5 add-log-stddev=true",
        "component name=b.affine type=NaturalGradientAffineComponent input-dim=4 output-dim=4  "
        "max-change=0.75",
        "component name=b.batchnorm type=BatchNormComponent dim=4 target-rms=1.0"]
    assert lines_of(text)[-1] == "output-node name=output input=b.batchnorm objective=quadratic"


def test_affine_layer_and_output_layer_options():
    text = ("input dim=16 name=input\naffine-layer name=a dim=10\n"
            "output-layer name=output dim=5 bottleneck-dim=3 include-log-softmax=false "
            "learning-rate-factor=2.0 l2-regularize=0.001 param-stddev=0.1\n")
    final = lines_of(text)
    assert final[1:3] == [
        "component name=a type=NaturalGradientAffineComponent input-dim=16 output-dim=10  "
        "param-stddev=0.25 bias-stddev=1.0 bias-mean=0.0 max-change=0.75 l2-regularize=0.0",
        "component-node name=a component=a input=input"]
    assert final[3:] == [
        f"component name=output.linear type=LinearComponent orthonormal-constraint=1.0 "
        f"param-stddev={1.0 / 10 ** 0.5} input-dim=10 output-dim=3 max-change=0.75  "
        "learning-rate-factor=2.0 l2-regularize=0.001 max-change=1.5",
        "component-node name=output.linear component=output.linear input=a",
        "component name=output.affine type=NaturalGradientAffineComponent input-dim=3 "
        "output-dim=5  learning-rate-factor=2.0 l2-regularize=0.001 max-change=1.5 "
        "param-stddev=0.1 bias-stddev=0.0",
        "component-node name=output.affine component=output.affine input=output.linear",
        "output-node name=output input=output.affine objective=linear"]


def test_batchnorm_variants_of_lstm_layers_change_the_output_node():
    text = ("input dim=4 name=input\n"
            "fast-lstm-batchnorm-layer name=a cell-dim=4\n"
            "fast-lstmp-batchnorm-layer name=b cell-dim=8 recurrent-projection-dim=2\n"
            "lstmp-batchnorm-layer name=c cell-dim=4 recurrent-projection-dim=1 "
            "non-recurrent-projection-dim=2\noutput-layer name=output dim=3\n")
    final = lines_of(text)
    for name, node, dim in (("a", "m", 4), ("b", "rp", 4), ("c", "rp_t", 3)):
        i = final.index(f"component name={name}.{node}_batchnorm type=BatchNormComponent dim={dim} ")
        assert final[i + 1] == (f"component-node name={name}.{node}_batchnorm "
                                f"component={name}.{node}_batchnorm input={name}.{node}")
    assert "input=Append(a.m_batchnorm, IfDefined(Offset(b.r_trunc, -1)))" in final[final.index(
        "###  Nodes for the components above.", final.index("##  Begin LSTM layer 'b'")) + 1]
    assert "component-node name=output.affine component=output.affine input=c.rp_t_batchnorm" in final


def test_dropout_options_of_projected_lstms():
    text = ("input dim=4 name=input\nfast-lstmp-layer name=f cell-dim=8 recurrent-projection-dim=2 "
            "dropout-proportion=0.0\nlstmp-layer name=g cell-dim=4 recurrent-projection-dim=1 "
            "dropout-proportion=0.5 dropout-per-frame=true\noutput-layer name=output dim=3\n")
    final = lines_of(text)
    assert ("component name=f.lstm_nonlin type=LstmNonlinearityComponent cell-dim=8 "
            "use-dropout=true  max-change=0.75 ") in final
    assert "component name=f.dropout_mask type=DropoutMaskComponent output-dim=3 " \
           "dropout-proportion=0.0 " in final
    assert "component-node name=f.dropout_mask component=f.dropout_mask input=f.dropout_mask" in final
    assert ("component-node name=f.lstm_nonlin component=f.lstm_nonlin input=Append(f.W_all, "
            "IfDefined(Offset(f.c_trunc, -1)), f.dropout_mask)") in final
    assert ("component name=g.dropout type=DropoutComponent dim=4 dropout-proportion=0.5 "
            "dropout-per-frame=true") in final
    for gate in "ifo":
        i = final.index(f"component-node name=g.{gate}_t_predrop component=g.{gate} "
                        f"input=Sum(g.{gate}1_t, g.{gate}2_t)")
        assert final[i + 1] == (f"component-node name=g.{gate}_t component=g.dropout "
                                f"input=g.{gate}_t_predrop")


# ------------------------------------------------------------------ descriptor syntax
def test_descriptor_shorthand():
    text = ("input dim=2 name=a\ninput dim=3 name=b\n"
            "output name=o1 input=Append([-2], [-1]@-3, a@2, b@0, Offset(a, 1, 0))\n"
            "relu-layer name=r input=Append(-1, 0, 1, Scale(2, b), Const(0.5, 4)) dim=4\n"
            "fast-lstmp-layer name=l cell-dim=4 recurrent-projection-dim=1\n"
            "output name=o2 input=Sum(l.c, r) output-delay=-1\n"
            "output-layer name=o3 dim=2 input=Append(l, Failover(IfDefined(r@-1), Round(r, 2)))\n"
            "output name=o4 input=Switch(o3.affine, o3.log-softmax)\n")
    layers = parse_xconfig(text, "t")
    assert layers[2].input.final == "Append(a, Offset(b, -3), Offset(a, 2), b, Offset(a, 1, 0))"
    assert layers[2].input.dim == 2 + 3 + 2 + 3 + 2
    assert layers[3].input.final == ("Append(Offset(o1, -1), o1, Offset(o1, 1), Scale(2.0, b), "
                                     "Const(0.5, 4))")
    assert layers[3].input.dim == 12 * 3 + 3 + 4
    assert layers[5].input.final == "Sum(l.c, r.relu)" and layers[5].input.dim == 4
    assert layers[6].input.normalized == "Append(l, Failover(IfDefined(Offset(r, -1)), Round(r, 2)))"
    assert layers[6].input.final == ("Append(l.rp, Failover(IfDefined(Offset(r.relu, -1)), "
                                     "Round(r.relu, 2)))")
    assert layers[6].input.dim == 2 + 4
    assert layers[7].input.final == "Switch(o3.affine, o3.log-softmax)"
    final = get_config_lines(layers)["final"]
    assert "output-node name=o2 input=Offset(Sum(l.c, r.relu), -1) objective=linear" in final


def test_every_generated_line_parses_as_an_nnet3_config_line():
    text = substitute(MAIN_XCONFIG, {"NUM_PDFS": 42}).replace(
        "output-layer", "relu-batchnorm-layer name=tdnn dim=32\nlstmp-layer name=lstm3 cell-dim=16 "
        "recurrent-projection-dim=4 non-recurrent-projection-dim=4\noutput-layer")
    for config, lines in get_config_lines(parse_xconfig(text, "t")).items():
        for line in lines:
            cl = ConfigLine.parse(line, config)
            if cl is not None and "input" in cl.values:
                parse_descriptor(cl.values["input"])


# ---------------------------------------------------------------------- expanded form
def test_expanded_lines_show_defaults_and_normalized_descriptors():
    layers = parse_xconfig(substitute(MAIN_XCONFIG, {"NUM_PDFS": 42}), "t")
    assert layers[1].expanded() == (
        "fixed-affine-layer name=lda affine-transform-file=configs/lda.mat delay=5 dim=200 "
        "input=Append(-2,-1,0,1,2) write-init-config=True")
    assert layers[2].expanded(normalized=True) == (
        "fast-lstmp-layer name=fastlstm1 cell-dim=256 clipping-threshold=30.0 decay-time=20.0 "
        "delay=-1 dropout-proportion=-1.0 input=lda l2-regularize=0.0 "
        "lstm-nonlinearity-options=\" max-change=0.75\" ng-affine-options=\" max-change=1.5\" "
        "non-recurrent-projection-dim=64 recurrent-projection-dim=64 zeroing-interval=20 "
        "zeroing-threshold=15.0")
    assert str(layers[4]).startswith("output-layer name=output bias-stddev=0.0 bottleneck-dim=-1 "
                                     "dim=42 include-log-softmax=True input=[-1] l2-regularize= ")


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text, where, message", [
    ("input dim=4 name=input\nlstm-layr name=l\n", "net.xconfig:2",
     "unknown layer type 'lstm-layr'; supported: affine-layer, "),
    ("input dim=4 name=input\nfast-lstm-layer name=l cell-dims=3\n", "net.xconfig:2",
     "fast-lstm-layer name=l: unknown option cell-dims=; the options of fast-lstm-layer"),
    ("input dim=4 name=input\n\n# c\nfast-lstmp-layer name=l cell-dim=256\n", "net.xconfig:4",
     "recurrent-projection-dim= must be given as a positive integer (Kaldi's default "
     "cell-dim/4 = 64.0 is fractional"),
    ("input dim=4 name=input\nlstmp-layer name=l recurrent-projection-dim=2\n", "net.xconfig:2",
     "cell-dim= must be given"),
    ("input dim=4 name=input\nfast-lstmp-layer name=l cell-dim=8 recurrent-projection-dim=6\n",
     "net.xconfig:2", "exceeds cell-dim"),
    ("input dim=4 name=input\nfast-lstm-layer name=l delay=0\n", "net.xconfig:2",
     "delay= must not be 0"),
    ("input dim=4 name=input\nfast-lstm-layer name=l delay=-2 decay-time=2\n", "net.xconfig:2",
     "decay-time=2.0 must be larger than |delay|=2"),
    ("input dim=4 name=input\nfast-lstm-layer name=l cell-dim=3.5\n", "net.xconfig:2",
     "option cell-dim=3.5 must be an integer"),
    ("input dim=4 name=input\noutput-layer name=o dim=3 include-log-softmax=yes\n",
     "net.xconfig:2", "must be true or false"),
    ("input dim=4 name=input\nrelu-layer name=r input=Sum(input, Append(input, input))\n",
     "net.xconfig:2", "have different dims [4, 8]"),
    ("input dim=4 name=input\nrelu-layer name=r input=Append(input, lstm9)\n", "net.xconfig:2",
     "no layer named 'lstm9' above this line"),
    ("input dim=4 name=input\nrelu-layer name=r input=Append(input,\n", "net.xconfig:2",
     "expected a descriptor but got 'end of descriptor'"),
    ("input dim=4 name=input\nrelu-layer name=r input=[-2]\n", "net.xconfig:2",
     "[-2] must be a negative offset within the 1 layer(s) above"),
    ("input dim=4 name=input\nrelu-layer name=input\n", "net.xconfig:2", "already used"),
    ("input dim=4 name=input\nrelu-layer dim=3\n", "net.xconfig:2", "name= is required"),
    ("input name=input\n", "net.xconfig:1", "dim= must be given and positive"),
    ("input dim=4 name=input\noutput-layer name=o dim=3\nrelu-layer name=r\n", "net.xconfig:3",
     "the output of output-layer 'o' is an nnet3 output node"),
    ("input dim=4 name=input\nfast-lstm-layer name=l\noutput name=o input=l.c\n", "net.xconfig:3",
     "fast-lstm-layer 'l' has no auxiliary output 'c' (it has: none)"),
    ("input dim=4 name=input\nrelu-layer name=r dim=3 ng-affine-options='a'\n", "net.xconfig:2",
     "disallowed character \"'\" (use double quotes"),
    ("input dim=4 name=input\nrelu-layer name=r dim=3 dim=4\n", "net.xconfig:2",
     "option dim= is given more than once"),
    ("input dim=4 name=input\nfixed-affine-layer name=lda\n", "net.xconfig:2",
     "affine-transform-file= must be given"),
    ("input dim=4 name=input\noutput-layer name=o dim=3 bottleneck-dim=5\n", "net.xconfig:2",
     "bottleneck-dim=5 must be positive and smaller"),
    ("input dim=4 name=input\nrelu-layer name=r learning-rate-factor=-1\n", "net.xconfig:2",
     "learning-rate-factor=-1 must be a positive number"),
])
def test_errors_name_file_line_and_layer(text, where, message):
    err = error_of(text)
    assert err.startswith(where + ": ") and message in err


def test_missing_output_layer_and_empty_file():
    assert "no output layer" in error_of("input dim=4 name=input\nrelu-layer name=r\n")
    assert "has no layers" in error_of("# only a comment\n")


# ---------------------------------------------------------------- the config dir
def test_write_config_dir(tmp_path):
    xconfig = tmp_path / "network.xconfig"
    xconfig.write_text(MAIN_XCONFIG.replace("input dim=40 name=input", "  input   dim=40   name=input  # features"))
    configs = tmp_path / "configs"
    configs.mkdir()
    result = write_config_dir(str(xconfig), str(configs), {"NUM_PDFS": 42}, command="CMD")
    assert sorted(os.listdir(configs)) == ["final.config", "init.config", "ref.config", "xconfig",
                                           "xconfig.expanded.1", "xconfig.expanded.2"]
    final = (configs / "final.config").read_text()
    assert final == ("# This file was created by the command:\n# CMD\n"
                     "# It contains the entire neural network.\n\n"
                     + "".join(line + "\n" for line in result.lines["final"]))
    assert (configs / "init.config").read_text().endswith(
        "# input features.\n\ninput-node name=input dim=40\n"
        "component name=lda.delayed type=NoOpComponent dim=200\n"
        "component-node name=lda.delayed component=lda.delayed input=Append(Offset(input, -2), "
        "Offset(input, -1), input, Offset(input, 1), Offset(input, 2))\n"
        "output-node name=output input=Offset(lda.delayed, 5)\n")
    assert (configs / "ref.config").read_text().startswith(
        "# This file was created by the command:\n# CMD\n# It contains the entire neural "
        "network, but with those\n")
    copy = (configs / "xconfig").read_text().split("\n")
    assert copy[:5] == ["# This file was created by the command:", "# CMD",
                        "# It is a copy of the source from which the config files in # this "
                        "directory were generated.", "", "input   dim=40   name=input  # features"]
    assert copy[-2].endswith("dim=42 max-change=1.5") and copy[-1] == ""
    expanded = (configs / "xconfig.expanded.2").read_text().split("\n")
    assert expanded[2:6] == [
        "# It contains the same content as ./xconfig but it was parsed,",
        "# default config values were set, ", "# and Descriptors (input=xxx) were normalized.",
        "# See also ./xconfig.expanded.1"]
    assert expanded[7:9] == ["input name=input dim=40", result.layers[1].expanded(normalized=True)]
    assert (configs / "xconfig.expanded.1").read_text().split("\n")[2] == \
        "#It contains the same content as ./xconfig but it was parsed and"
    assert [layer.name for layer in result.layers] == ["input", "lda", "fastlstm1", "fastlstm2",
                                                       "output"]

    # Without a fixed-affine-layer, a stale init.config goes away; a bad xconfig writes nothing.
    xconfig.write_text("input dim=4 name=input\noutput-layer name=output dim=3\n")
    write_config_dir(str(xconfig), str(configs))
    assert "init.config" not in os.listdir(configs)
    before = (configs / "final.config").read_text()
    xconfig.write_text("input dim=4 name=input\noutput-layer name=output dim=-5 bogus=1\n")
    with pytest.raises(XconfigError, match="network.xconfig:2"):
        write_config_dir(str(xconfig), str(configs))
    assert (configs / "final.config").read_text() == before
    assert not [f for f in os.listdir(configs) if f.startswith(".tmp")]
