"""nnet3 components: Kaldi's exact bytes/characters, reading variants, nnet3-init, validation.

Fixtures are the Kaldi-verified examples of docs/kaldi-formats.md section 4.
"""
import struct

import numpy as np
import pytest

from kaldi_avg.kaldi.binary import KaldiFormatError, KaldiReader, KaldiWriter
from kaldi_avg.kaldi.nnet3.components import (
    AffineComponent,
    BackpropTruncationComponent,
    BatchNormComponent,
    ClipGradientComponent,
    ComponentError,
    DropoutComponent,
    DropoutMaskComponent,
    ElementwiseProductComponent,
    FixedAffineComponent,
    FixedBiasComponent,
    FixedScaleComponent,
    GeneralDropoutComponent,
    GruNonlinearityComponent,
    LinearComponent,
    LogSoftmaxComponent,
    LstmNonlinearityComponent,
    NaturalGradientAffineComponent,
    NaturalGradientPerElementScaleComponent,
    NoOpComponent,
    NormalizeComponent,
    OutputGruNonlinearityComponent,
    PerElementScaleComponent,
    PermuteComponent,
    RectifiedLinearComponent,
    RestrictedAttentionComponent,
    ScaleAndOffsetComponent,
    SigmoidComponent,
    SoftmaxComponent,
    SpecAugmentTimeMaskComponent,
    StatisticsExtractionComponent,
    StatisticsPoolingComponent,
    SumBlockComponent,
    TanhComponent,
    TdnnComponent,
    TimeHeightConvolutionComponent,
    component_from_config,
    component_types,
    read_component,
)
from kaldi_avg.kaldi.nnet3.config import ConfigLine, NetworkConfigError


def to_bytes(comp, binary):
    w = KaldiWriter(binary)
    comp.write(w)
    return w.getvalue()


def to_text(comp):
    return to_bytes(comp, False).decode()


def read_all(data, binary):
    r = KaldiReader(data, binary)
    comp = read_component(r)
    assert r.pos == len(data), "reader must consume exactly the component body"
    return comp


def from_config(line, seed=0):
    cfg = ConfigLine.parse(line, "test.config:1")
    cfg.get_str("name")
    return component_from_config(cfg, np.random.default_rng(seed))


def dyadic(seed, *shape):
    """Values that %.7g prints exactly, so text round trips are lossless."""
    return (np.random.default_rng(seed).integers(-64, 64, size=shape) / 16).astype(np.float32)


# -- the verified text examples of docs/kaldi-formats.md section 4 ---------------------------------

def test_fresh_log_softmax_text_matches_kaldi():
    comp = from_config("component name=output.log-softmax type=LogSoftmaxComponent dim=8")
    assert to_text(comp) == (
        "<LogSoftmaxComponent> <Dim> 8 <ValueAvg>  [ ]\n<DerivAvg>  [ ]\n<Count> 0 "
        "<OderivRms>  [ ]\n<OderivCount> 0 <NumDimsSelfRepaired> 0 <NumDimsProcessed> 0 "
        "</LogSoftmaxComponent> ")


def test_affine_text_with_optional_header_fields():
    comp = from_config("component name=a type=AffineComponent input-dim=2 output-dim=2 "
                       "learning-rate-factor=0.5 max-change=0.75 l2-regularize=0.01")
    comp.linear_params[:] = [[1, 2], [3, 4]]
    comp.bias_params[:] = [0.5, -1]
    assert to_text(comp) == (
        "<AffineComponent> <LearningRateFactor> 0.5 <MaxChange> 0.75 <L2Regularize> 0.01 "
        "<LearningRate> 0.001 <LinearParams>  [\n  1 2 \n  3 4 ]\n<BiasParams>  [ 0.5 -1 ]\n"
        "</AffineComponent> ")


def test_linear_text_with_orthonormal_constraint():
    comp = from_config("component name=o.linear type=LinearComponent input-dim=4 output-dim=2 "
                       "orthonormal-constraint=1.0")
    comp.linear_params[:] = [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert to_text(comp) == (
        "<LinearComponent> <LearningRate> 0.001 <Params>  [\n  1 0 0 0 \n  0 1 0 0 ]\n"
        "<OrthonormalConstraint> 1 <UseNaturalGradient> T <RankInOut> 2 1 <Alpha> 4 "
        "<NumSamplesHistory> 2000 <UpdatePeriod> 4 </LinearComponent> ")


def test_fresh_lstm_nonlinearity_text():
    comp = from_config("component name=l.lstm_nonlin type=LstmNonlinearityComponent cell-dim=2 "
                       "use-dropout=false  max-change=0.75")
    comp.peepholes[:] = [[0.5, -1], [0.25, 2], [0, 1]]
    zeros = " [\n" + "\n".join(["  0 0 "] * 5) + "]\n"
    assert to_text(comp) == (
        "<LstmNonlinearityComponent> <MaxChange> 0.75 <LearningRate> 0.001 "
        "<Params>  [\n  0.5 -1 \n  0.25 2 \n  0 1 ]\n"
        f"<ValueAvg> {zeros}<DerivAvg> {zeros}"
        "<SelfRepairConfig>  [ 0.05 0.05 0.2 0.05 0.2 1e-05 1e-05 1e-05 1e-05 1e-05 ]\n"
        "<SelfRepairProb>  [ 0 0 0 0 0 ]\n<Count> 0 </LstmNonlinearityComponent> ")
    assert (comp.input_dim(), comp.output_dim()) == (10, 4)


def test_backprop_truncation_text():
    comp = from_config("component name=l.cm_trunc type=BackpropTruncationComponent dim=10 "
                       "clipping-threshold=30.0 zeroing-threshold=15.0 zeroing-interval=20 "
                       "recurrence-interval=1 scale=0.95")
    assert to_text(comp) == (
        "<BackpropTruncationComponent> <Dim> 10 <Scale> 0.95 <ClippingThreshold> 30 "
        "<ZeroingThreshold> 15 <ZeroingInterval> 20 <RecurrenceInterval> 1 "
        "<NumElementsClipped> 0 <NumElementsZeroed> 0 <NumElementsProcessed> 0 "
        "<NumZeroingBoundaries> 0 </BackpropTruncationComponent> ")


def test_natural_gradient_affine_binary_header_bytes():
    comp = from_config("component name=W type=NaturalGradientAffineComponent input-dim=3 "
                       "output-dim=4 max-change=1.5")
    data = to_bytes(comp, True)
    assert data.startswith(
        b"<NaturalGradientAffineComponent> <MaxChange> \x04\x00\x00\xc0\x3f"
        b"<LearningRate> \x04\x6f\x12\x83\x3a<LinearParams> FM \x04\x04\x00\x00\x00"
        b"\x04\x03\x00\x00\x00")
    assert data.endswith(b"<RankIn> \x04\x02\x00\x00\x00<RankOut> \x04\x02\x00\x00\x00"
                         b"<UpdatePeriod> \x04\x04\x00\x00\x00<NumSamplesHistory> \x04"
                         + struct.pack("<f", 2000) + b"<Alpha> \x04" + struct.pack("<f", 4)
                         + b"</NaturalGradientAffineComponent> ")


def test_statistics_are_written_as_doubles():
    assert b"<Count> \x08" + struct.pack("<d", 0) in to_bytes(SigmoidComponent(dim=3), True)
    bt = to_bytes(BackpropTruncationComponent(dim=2), True)
    assert b"<NumZeroingBoundaries> \x08" + struct.pack("<d", 0) in bt
    lstm = LstmNonlinearityComponent(peepholes=np.zeros((3, 2)), count=3.0)
    assert b"<Count> \x08" + struct.pack("<d", 3) in to_bytes(lstm, True)
    clip = to_bytes(ClipGradientComponent(dim=2, num_elements_clipped=7), True)
    assert b"<NumElementsClipped> \x04" + struct.pack("<i", 7) in clip


def test_small_xconfig_network_components():
    """The components of docs/kaldi-formats.md 5.10: dims, natural-gradient ranks, 878 parameters."""
    lines = [
        "type=NaturalGradientAffineComponent input-dim=14 output-dim=32  max-change=1.5",
        "type=LstmNonlinearityComponent cell-dim=8 use-dropout=false  max-change=0.75",
        "type=BackpropTruncationComponent dim=10 clipping-threshold=30.0 zeroing-threshold=15.0 "
        "zeroing-interval=20 recurrence-interval=1 scale=0.95",
        "type=NaturalGradientAffineComponent input-dim=8 output-dim=4  max-change=1.5",
        "type=NaturalGradientAffineComponent input-dim=10 output-dim=24  max-change=1.5",
        "type=LstmNonlinearityComponent cell-dim=6  max-change=0.75",
        "type=BackpropTruncationComponent dim=12 recurrence-interval=2 scale=1.0",
        "type=NaturalGradientAffineComponent input-dim=6 output-dim=8  max-change=1.5 "
        "param-stddev=0.0 bias-stddev=0.0",
        "type=LogSoftmaxComponent dim=8",
    ]
    comps = [from_config(f"component name=c{i} {line}") for i, line in enumerate(lines)]
    assert [(c.input_dim(), c.output_dim()) for c in comps] == [
        (14, 32), (40, 16), (10, 10), (8, 4), (10, 24), (30, 12), (12, 12), (6, 8), (8, 8)]
    assert (comps[0].rank_in, comps[0].rank_out) == (7, 16)
    assert sum(c.num_params() for c in comps) == 878
    assert not comps[7].linear_params.any() and not comps[7].bias_params.any()


# -- every type: binary <-> text round trips -------------------------------------------------

def samples():
    """One or more instances of every type, with the optional fields switched on."""
    lr = dict(learning_rate_factor=0.5, is_gradient=True, max_change=1.5, l2_regularize=0.25,
              learning_rate=0.125)
    return [
        NaturalGradientAffineComponent(linear_params=dyadic(1, 3, 4), bias_params=dyadic(2, 3),
                                       orthonormal_constraint=1.0, **lr),
        NaturalGradientAffineComponent(linear_params=dyadic(3, 2, 5), bias_params=dyadic(4, 2)),
        AffineComponent(linear_params=dyadic(5, 2, 3), bias_params=dyadic(6, 2),
                        orthonormal_constraint=0.5, **lr),
        FixedAffineComponent(linear_params=dyadic(7, 3, 3), bias_params=dyadic(8, 3)),
        LinearComponent(linear_params=dyadic(9, 2, 6), use_natural_gradient=False, rank_in=3,
                        rank_out=1, alpha=2.0, num_samples_history=1000.0, update_period=2),
        LstmNonlinearityComponent(peepholes=dyadic(10, 3, 3), value_avg=dyadic(11, 5, 3),
                                  deriv_avg=dyadic(12, 5, 3), self_repair_prob=dyadic(13, 5),
                                  use_dropout=True, count=4.0, max_change=0.75),
        BackpropTruncationComponent(dim=4, scale=0.5, recurrence_interval=3,
                                    num_elements_clipped=2.0, num_elements_processed=40.0),
        SigmoidComponent(dim=4, block_dim=2, value_avg=dyadic(14, 4), deriv_avg=dyadic(15, 4),
                         count=8.0, oderiv_rms=dyadic(16, 4), oderiv_count=2.0,
                         num_dims_self_repaired=1.0, num_dims_processed=16.0,
                         self_repair_lower_threshold=0.125, self_repair_upper_threshold=0.875,
                         self_repair_scale=1e-05),
        TanhComponent(dim=3, self_repair_scale=1e-05),
        RectifiedLinearComponent(dim=5),
        SoftmaxComponent(dim=2),
        LogSoftmaxComponent(dim=7),
        NormalizeComponent(dim=6, block_dim=3, target_rms=0.5, add_log_stddev=True),
        NormalizeComponent(dim=4),
        BatchNormComponent(dim=4, block_dim=2, test_mode=True, count=10.0,
                           stats_mean=dyadic(17, 2), stats_var=np.array([0.5, 2], np.float32)),
        NoOpComponent(dim=3, backprop_scale=0.5),
        ScaleAndOffsetComponent(dim=6, scales=dyadic(18, 3), offsets=dyadic(19, 3),
                                use_natural_gradient=False, rank=5, **lr),
        FixedScaleComponent(scales=dyadic(20, 4)),
        FixedBiasComponent(bias=dyadic(21, 4)),
        ElementwiseProductComponent(in_dim=6, out_dim=3),
        ClipGradientComponent(dim=3, clipping_threshold=5.0, norm_based_clipping=True,
                              self_repair_clipped_proportion_threshold=0.25,
                              num_elements_clipped=3, num_elements_processed=9,
                              num_self_repaired=1, num_backpropped=2),
        NaturalGradientPerElementScaleComponent(scales=dyadic(22, 3), **lr),
        PerElementScaleComponent(scales=dyadic(23, 3), max_change=0.75),
        DropoutComponent(dim=3, dropout_proportion=0.25, dropout_per_frame=True, test_mode=True),
        DropoutMaskComponent(dim=3, dropout_proportion=0.125, continuous=True, test_mode=True),
        DropoutMaskComponent(dim=2),
        TdnnComponent(time_offsets=[-3, 0], linear_params=dyadic(24, 2, 6), bias_params=dyadic(25, 2),
                      orthonormal_constraint=-1.0, use_natural_gradient=False, alpha_in=2.0,
                      alpha_out=3.0, rank_in=2, rank_out=1, num_samples_history=500.0, **lr),
        TdnnComponent(time_offsets=[0], linear_params=dyadic(26, 3, 2), bias_params=np.zeros(0)),
        GeneralDropoutComponent(dim=6, block_dim=3, time_period=2, dropout_proportion=0.25,
                                test_mode=True, continuous=True),
        GeneralDropoutComponent(dim=4, spec_augment_max_proportion=0.5, spec_augment_max_regions=2),
        GruNonlinearityComponent(cell_dim=3, recurrent_dim=2, w_h=dyadic(27, 3, 2), value_avg=dyadic(28, 3),
                                 deriv_avg=dyadic(29, 3), self_repair_total=1.5, count=4.0, rank_in=5,
                                 rank_out=6, update_period=3, alpha=2.0, **lr),
        OutputGruNonlinearityComponent(cell_dim=3, w_h=dyadic(30, 3), self_repair_threshold=0.25,
                                       rank=4, update_period=2),
        SpecAugmentTimeMaskComponent(dim=5, zeroed_proportion=0.125, time_mask_max_frames=4, test_mode=True),
        PermuteComponent(column_map=[2, 0, 1]),
        TimeHeightConvolutionComponent(num_filters_in=2, num_filters_out=3, height_in=4, height_out=2,
                                       height_subsample_out=2, offsets=[(-1, 0), (0, 0), (0, 1)],
                                       required_time_offsets=[0], linear_params=dyadic(31, 3, 6),
                                       bias_params=dyadic(32, 3), max_memory_mb=50.0,
                                       use_natural_gradient=False, num_minibatches_history=8.0,
                                       alpha_in=2.0, alpha_out=3.0, rank_in=4, rank_out=2, **lr),
        SumBlockComponent(in_dim=6, out_dim=2, scale=0.5),
        RestrictedAttentionComponent(num_heads=2, key_dim=2, value_dim=3, num_left_inputs=2, num_right_inputs=1,
                                     time_stride=3, num_left_inputs_required=1, num_right_inputs_required=0,
                                     output_context=False, key_scale=0.25, stats_count=6.0,
                                     entropy_stats=dyadic(33, 2), posterior_stats=dyadic(34, 2, 4)),
        StatisticsExtractionComponent(in_dim=4, input_period=3, output_period=9, include_variance=False),
        StatisticsPoolingComponent(in_dim=9, input_period=9, left_context=18, right_context=9,
                                   num_log_count_features=2, output_stddevs=True, variance_floor=0.125),
    ]


def test_samples_cover_every_registered_type():
    assert {c.type_name for c in samples()} == set(component_types())
    assert len(component_types()) == 34


@pytest.mark.parametrize("comp", samples(), ids=lambda c: c.type_name)
def test_binary_text_binary_round_trip(comp):
    comp.validate()
    binary, text = to_bytes(comp, True), to_bytes(comp, False)
    assert to_bytes(read_all(text, False), True) == binary
    assert to_bytes(read_all(binary, True), False) == text
    again = read_all(binary, True)
    assert (again.input_dim(), again.output_dim()) == (comp.input_dim(), comp.output_dim())
    assert again.info() == comp.info()


def test_optional_fields_written_only_when_kaldi_writes_them():
    text = to_text(SigmoidComponent(dim=4))
    assert "<BlockDim>" not in text and "<SelfRepair" not in text
    assert "<BlockDim> 2 " in to_text(SigmoidComponent(dim=4, block_dim=2))
    lstm = LstmNonlinearityComponent(peepholes=np.zeros((3, 2)))
    assert "<UseDropout>" not in to_text(lstm)
    lstm.use_dropout = True
    assert "<UseDropout> T <Count>" in to_text(lstm) and lstm.input_dim() == 13
    affine = AffineComponent(linear_params=np.ones((1, 1)), bias_params=np.ones(1))
    assert to_text(affine).startswith("<AffineComponent> <LearningRate> 0.001 <LinearParams>")
    assert "<Continuous>" not in to_text(DropoutMaskComponent(dim=3))


def test_params_are_the_components_own_storage():
    comp = from_config("component name=a type=NaturalGradientAffineComponent input-dim=2 "
                       "output-dim=1 param-stddev=0 bias-stddev=0")
    params = comp.params()
    assert set(params) == {"linear_params", "bias_params"}
    assert all(p.dtype == np.float32 for p in params.values())
    params["linear_params"][0, 1] = 0.5
    params["bias_params"][0] = -2
    assert "[\n  0 0.5 ]\n<BiasParams>  [ -2 ]" in to_text(comp)
    assert set(from_config("component name=l type=LstmNonlinearityComponent cell-dim=2")
               .params()) == {"peepholes"}
    assert from_config("component name=s type=SigmoidComponent dim=2").params() == {}
    assert ScaleAndOffsetComponent(dim=4).num_params() == 8


# -- reading what Kaldi accepts ------------------------------------------------------------------

def test_reads_double_vectors_matrices_and_scalars():
    data = (b"<FixedAffineComponent> <LinearParams> DM \x04\x01\x00\x00\x00\x04\x02\x00\x00\x00"
            + struct.pack("<2d", 1.5, -2) + b"<BiasParams> DV \x04\x01\x00\x00\x00"
            + struct.pack("<d", 0.25) + b"</FixedAffineComponent> ")
    comp = read_all(data, True)
    assert comp.linear_params.tolist() == [[1.5, -2]] and comp.bias_params.tolist() == [0.25]
    # a float-width count where Kaldi writes a double
    data = (b"<TanhComponent> <Dim> \x04\x02\x00\x00\x00<ValueAvg> FV \x04\x00\x00\x00\x00"
            b"<DerivAvg> FV \x04\x00\x00\x00\x00<Count> \x04" + struct.pack("<f", 3)
            + b"</TanhComponent> ")
    comp = read_all(data, True)
    assert comp.count == 3.0 and comp.oderiv_count == 0.0


@pytest.mark.parametrize("text, check", [
    # NonlinearComponent written before <OderivRms> and the self-repair counters existed
    ("<RectifiedLinearComponent> <Dim> 2 <ValueAvg> [ ] <DerivAvg> [ ] <Count> 0 "
     "</RectifiedLinearComponent>", lambda c: c.dim == 2 and c.oderiv_rms.size == 0),
    # NoOpComponent from when it was a NonlinearComponent
    ("<NoOpComponent> <Dim> 3 <ValueAvg> [ ] <DerivAvg> [ ] <Count> 0 <OderivRms> [ ] "
     "<OderivCount> 0 <NumDimsSelfRepaired> 0 <NumDimsProcessed> 0 </NoOpComponent>",
     lambda c: c.dim == 3 and c.backprop_scale == 1.0),
    # NaturalGradientAffineComponent legacy trailer and alternative closing token
    ("<NaturalGradientAffineComponent> <LearningRate> 0.01 <LinearParams> [ 1 2 ] "
     "<BiasParams> [ 3 ] <RankIn> 1 <RankOut> 1 <UpdatePeriod> 4 <NumSamplesHistory> 2000 "
     "<Alpha> 4 <MaxChangePerSample> 0.1 <IsGradient> T <UpdateCount> 0 <ActiveScalingCount> 0 "
     "<MaxChangeScaleStats> 0 <NaturalGradientAffineComponent>",
     lambda c: c.is_gradient and c.input_dim() == 2),
    # AffineComponent with <IsGradient> after the parameters (old layout)
    ("<AffineComponent> <LearningRate> 0.01 <LinearParams> [ 1 2 ] <BiasParams> [ 3 ] "
     "<IsGradient> T </AffineComponent>", lambda c: c.is_gradient),
    # NormalizeComponent: <Dim> instead of <InputDim>, no target-rms, old stats
    ("<NormalizeComponent> <Dim> 4 <ValueAvg> [ ] <DerivAvg> [ ] <Count> 0 "
     "</NormalizeComponent>", lambda c: (c.dim, c.target_rms, c.add_log_stddev) == (4, 1, False)),
    ("<BackpropTruncationComponent> <Dim> 2 <ClippingThreshold> 30 <ZeroingThreshold> 15 "
     "<ZeroingInterval> 20 <RecurrenceInterval> 1 <NumElementsClipped> 0 <NumElementsZeroed> 0 "
     "<NumElementsProcessed> 0 <NumZeroingBoundaries> 0 </BackpropTruncationComponent>",
     lambda c: c.scale == 1.0),
    ("<ClipGradientComponent> <Dim> 2 <ClippingThreshold> 15 <NormBasedClipping> F "
     "<NumElementsClipped> 0 <NumElementsProcessed> 0 </ClipGradientComponent>",
     lambda c: (c.self_repair_clipped_proportion_threshold, c.num_backpropped) == (1.0, 0)),
    ("<DropoutComponent> <Dim> 2 <DropoutProportion> 0.5 </DropoutComponent>",
     lambda c: not c.test_mode and not c.dropout_per_frame),
    ("<NaturalGradientPerElementScaleComponent> <LearningRate> 0.01 <Params> [ 1 2 ] "
     "<IsGradient> F <Rank> 8 <UpdatePeriod> 10 <NumSamplesHistory> 2000 <Alpha> 4 "
     "<MaxChangePerMinibatch> 0.5 </NaturalGradientPerElementScaleComponent>",
     lambda c: c.scales.tolist() == [1, 2]),
    # ExpectToken also takes a token without its "<"
    ("<FixedBiasComponent> Bias> [ 1 ] </FixedBiasComponent>", lambda c: c.bias.tolist() == [1]),
])
def test_reads_legacy_and_optional_layouts(text, check):
    comp = read_all(text.encode(), False)
    assert check(comp)
    comp.validate()


def test_unknown_type_is_named_with_position():
    with pytest.raises(KaldiFormatError, match=r"byte 0: unknown component type '<FooComponent>'"):
        read_all(b"<FooComponent> <Dim> \x04\x01\x00\x00\x00</FooComponent> ", True)


def test_truncated_body_names_the_type():
    data = to_bytes(NaturalGradientAffineComponent(linear_params=np.ones((2, 2)),
                                                   bias_params=np.ones(2)), True)
    with pytest.raises(KaldiFormatError, match="NaturalGradientAffineComponent.*end of file"):
        read_all(data[:60], True)


def test_wrong_token_names_expected_token_and_type():
    data = b"<TanhComponent> <Dim> 3 <DerivAvg> [ ] </TanhComponent> "
    with pytest.raises(KaldiFormatError, match=r"TanhComponent.*expected token <ValueAvg>, "
                                               r"got '<DerivAvg>'"):
        read_all(data, False)
    with pytest.raises(KaldiFormatError, match=r"expected token </TanhComponent>, got '<Foo>'"):
        read_all(b"<TanhComponent> <Dim> 3 <ValueAvg> [ ] <DerivAvg> [ ] <Count> 0 "
                 b"<Foo> </TanhComponent>", False)


def test_integer_width_must_match():
    data = b"<NoOpComponent> <Dim> \x08" + struct.pack("<q", 3) + b"</NoOpComponent> "
    with pytest.raises(KaldiFormatError, match="NoOpComponent.*int32"):
        read_all(data, True)


# -- nnet3-init: options, defaults and initialization scales -------------------------------------

def test_natural_gradient_affine_initialization_scales():
    comp = from_config("component name=a type=NaturalGradientAffineComponent input-dim=400 "
                       "output-dim=300 bias-mean=2 learning-rate=0.002 max-change=0.75")
    assert comp.linear_params.std() == pytest.approx(0.05, rel=0.03)
    assert comp.bias_params.std() == pytest.approx(1.0, rel=0.15)
    assert comp.bias_params.mean() == pytest.approx(2.0, abs=0.2)
    assert (comp.rank_in, comp.rank_out, comp.update_period) == (20, 80, 4)
    assert (comp.num_samples_history, comp.alpha) == (2000, 4)
    assert (comp.learning_rate, comp.max_change) == (np.float32(0.002), 0.75)
    stddev = from_config("component name=a type=AffineComponent input-dim=16 output-dim=500 "
                         "param-stddev=0.5 bias-stddev=0.1")
    assert stddev.linear_params.std() == pytest.approx(0.5, rel=0.05)
    assert stddev.bias_params.std() == pytest.approx(0.1, rel=0.15)


def test_other_initialization_scales():
    lstm = from_config("component name=l type=LstmNonlinearityComponent cell-dim=300")
    assert lstm.peepholes.shape == (3, 300)
    assert lstm.peepholes.std() == pytest.approx(1.0, rel=0.06)
    assert not lstm.value_avg.any() and lstm.value_avg.shape == (5, 300)
    lin = from_config("component name=l type=LinearComponent input-dim=100 output-dim=300")
    assert lin.linear_params.std() == pytest.approx(0.1, rel=0.05)
    assert (lin.rank_in, lin.rank_out, lin.use_natural_gradient) == (20, 80, True)
    ng = from_config("component name=w type=NaturalGradientPerElementScaleComponent dim=2000 "
                     "param-mean=0.0 param-stddev=1.0")
    assert ng.scales.std() == pytest.approx(1.0, rel=0.06) and ng.rank == 8
    assert (from_config("component name=p type=PerElementScaleComponent dim=3").scales == 1).all()
    sao = from_config("component name=s type=ScaleAndOffsetComponent dim=6 block-dim=2")
    assert sao.scales.tolist() == [1, 1] and sao.offsets.tolist() == [0, 0] and sao.rank == 20
    fixed = from_config("component name=s type=FixedScaleComponent dim=3 scale=0.5")
    assert fixed.scales.tolist() == [0.5] * 3
    bn = from_config("component name=b type=BatchNormComponent dim=4 block-dim=2")
    assert (bn.epsilon, bn.target_rms, bn.test_mode, bn.stats_mean.size) == (
        np.float32(1e-3), 1.0, False, 2)
    clip = from_config("component name=c type=ClipGradientComponent dim=2")
    assert (clip.clipping_threshold, clip.self_repair_clipped_proportion_threshold,
            clip.self_repair_scale) == (15.0, np.float32(0.01), 1.0)
    mask = from_config("component name=m type=DropoutMaskComponent output-dim=3")
    assert mask.dropout_proportion == 0.5
    relu = from_config("component name=r type=RectifiedLinearComponent dim=4 block-dim=2 "
                       "self-repair-scale=1e-05")
    assert "<BlockDim> 2 " in to_text(relu) and "<SelfRepairScale> 1e-05 " in to_text(relu)


def write_kaldi(path, obj, binary, kind):
    w = KaldiWriter(binary)
    w.header()
    getattr(w, kind)(obj)
    path.write_bytes(w.getvalue())
    return str(path)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_matrix_and_vector_files(tmp_path, binary):
    m = dyadic(30, 3, 5)
    path = write_kaldi(tmp_path / "lda.mat", m, binary, "matrix")
    fixed = from_config(f"component name=lda type=FixedAffineComponent matrix={path}")
    assert np.array_equal(fixed.linear_params, m[:, :4]) and np.array_equal(fixed.bias_params,
                                                                             m[:, 4])
    ng = from_config(f"component name=a type=NaturalGradientAffineComponent matrix={path} "
                     "input-dim=4 output-dim=3")
    assert (ng.input_dim(), ng.output_dim(), ng.rank_in, ng.rank_out) == (4, 3, 2, 2)
    lin = from_config(f"component name=a type=LinearComponent matrix={path}")
    assert np.array_equal(lin.linear_params, m)
    v = dyadic(31, 4)
    vec = write_kaldi(tmp_path / "v.vec", v, binary, "vector")
    assert np.array_equal(from_config(f"component name=s type=FixedScaleComponent scales={vec}")
                          .scales, v)
    assert np.array_equal(from_config(f"component name=s type=FixedBiasComponent bias={vec}")
                          .bias, v)
    assert np.array_equal(from_config(
        f"component name=s type=NaturalGradientPerElementScaleComponent scales={vec}").scales, v)
    with pytest.raises(NetworkConfigError, match="input-dim=5 does not match the matrix"):
        from_config(f"component name=a type=AffineComponent matrix={path} input-dim=5")


@pytest.mark.parametrize("line, message", [
    ("type=NoSuchComponent dim=3", "unknown component type 'NoSuchComponent'"),
    ("type=AffineComponent input-dim=3 output-dim=2 bias-mean=1", "does not accept.*bias-mean"),
    ("type=SigmoidComponent dim=3 dim2=4", "does not accept.*dim2"),
    ("type=FixedAffineComponent input-dim=3 output-dim=2 learning-rate=0.1",
     "does not accept.*learning-rate"),
    ("type=NormalizeComponent dim=3 input-dim=3", "does not accept.*input-dim"),
    ("type=TanhComponent", "missing required option dim="),
    ("type=DropoutComponent dim=3", "missing required option dropout-proportion="),
    ("type=LstmNonlinearityComponent cell-dim=4 self-repair-scale=0.5",
     "self-repair-scale must be in"),
    ("type=NaturalGradientAffineComponent input-dim=3 output-dim=2 max-change=-1",
     "max_change must be >= 0"),
    ("type=ElementwiseProductComponent input-dim=3 output-dim=2", "multiple"),
    ("type=SigmoidComponent dim=6 block-dim=4", "block-dim 4 must be > 0 and divide dim 6"),
    ("type=LinearComponent input-dim=3 output-dim=0", "must be > 0"),
    ("type=FixedAffineComponent matrix=/nonexistent/lda.mat", "cannot read matrix=/nonexistent"),
])
def test_bad_config_lines(line, message):
    with pytest.raises(NetworkConfigError, match=message):
        from_config(f"component name=x {line}")


def test_config_line_must_be_a_component_line():
    cfg = ConfigLine.parse("component-node name=x component=x input=y")
    with pytest.raises(NetworkConfigError, match="expected a 'component' line"):
        component_from_config(cfg, np.random.default_rng(0))


# -- validate(): what Kaldi only notices when computing -----------------------------------------

@pytest.mark.parametrize("comp, message", [
    (NaturalGradientAffineComponent(linear_params=np.ones((3, 2)), bias_params=np.ones(2)),
     "NaturalGradientAffineComponent: bias-params has 2 entries but linear-params has 3 rows"),
    (LstmNonlinearityComponent(peepholes=np.zeros((3, 4)), value_avg=np.zeros((0, 0)),
                               deriv_avg=np.zeros((0, 0))),
     "LstmNonlinearityComponent: ValueAvg must be 5 x cell-dim"),
    (LstmNonlinearityComponent(peepholes=np.zeros((3, 3)), value_avg=np.zeros((5, 4)),
                               deriv_avg=np.zeros((5, 4))),
     "LstmNonlinearityComponent: peepholes must be 3 x 4"),
    (LstmNonlinearityComponent(peepholes=np.zeros((3, 2)), self_repair_config=np.zeros(5)),
     "self_repair_config must have 10 entries"),
    (FixedAffineComponent(linear_params=[[np.nan]], bias_params=[0]),
     "FixedAffineComponent: linear_params contains NaN"),
    (SigmoidComponent(dim=3, value_avg=np.zeros(2)), "value_avg has 2 entries"),
    (BatchNormComponent(dim=2, test_mode=True), "test mode with count 0"),
    (BatchNormComponent(dim=2, stats_mean=np.zeros(3)), "stats_mean has 3 entries, expected 2"),
    (BackpropTruncationComponent(dim=2, scale=0.0), "scale must be > 0"),
    (ScaleAndOffsetComponent(dim=5, scales=np.ones(2), offsets=np.zeros(2)),
     "dim 5 must be a positive multiple"),
])
def test_validate_names_type_and_problem(comp, message):
    with pytest.raises(ComponentError, match=message):
        comp.validate()


def test_batchnorm_set_stats():
    bn = BatchNormComponent(dim=4, block_dim=2)
    bn.set_stats(100, [0.5, -1], [2, 0.25])
    bn.test_mode = True
    bn.validate()
    text = to_text(bn)
    assert "<TestMode> T <Count> 100 <StatsMean>  [ 0.5 -1 ]\n<StatsVar>  [ 2 0.25 ]\n" in text
    with pytest.raises(ComponentError, match="stats_var has 3 entries"):
        bn.set_stats(5, [0, 0], [1, 1, 1])
    assert bn.count == 100 and bn.stats_var.tolist() == [2, 0.25]


def test_info_lines():
    comp = from_config("component name=W type=NaturalGradientAffineComponent input-dim=14 "
                       "output-dim=32 max-change=1.5")
    assert comp.info().startswith(
        "type=NaturalGradientAffineComponent, input-dim=14, output-dim=32, learning-rate=0.001, "
        "max-change=1.5, linear-params-rms=")
    assert comp.info().endswith("rank-in=7, rank-out=16, num-samples-history=2000, "
                                "update-period=4, alpha=4")
    assert LogSoftmaxComponent(dim=8).info() == "type=LogSoftmaxComponent, dim=8"
    assert "cell-dim=8, use-dropout=false" in from_config(
        "component name=l type=LstmNonlinearityComponent cell-dim=8").info()


# -- TdnnComponent and GeneralDropoutComponent: Kaldi's Write order ---------------------------------
# (src/nnet3/nnet-tdnn-component.cc TdnnComponent::Write, nnet-general-component.cc
# GeneralDropoutComponent::Write)

def test_tdnn_text_and_binary_follow_kaldis_write():
    comp = from_config("component name=t.linear type=TdnnComponent input-dim=2 output-dim=1 "
                       "l2-regularize=0.01 max-change=0.75 use-bias=false time-offsets=-1,0 "
                       "orthonormal-constraint=-1.0")
    comp.linear_params[:] = [[1, 2, 3, 4]]
    assert to_text(comp) == (
        "<TdnnComponent> <MaxChange> 0.75 <L2Regularize> 0.01 <LearningRate> 0.001 "
        "<TimeOffsets> [ -1 0 ]\n<LinearParams>  [\n  1 2 3 4 ]\n<BiasParams>  [ ]\n"
        "<OrthonormalConstraint> -1 <UseNaturalGradient> T <NumSamplesHistory> 2000 "
        "<AlphaInOut> 4 4 <RankInOut> 2 1 </TdnnComponent> ")
    data = to_bytes(comp, True)
    f = lambda v: b"\x04" + struct.pack("<f", v)
    i = lambda v: b"\x04" + struct.pack("<i", v)
    assert data == (
        b"<TdnnComponent> <MaxChange> " + f(0.75) + b"<L2Regularize> " + f(0.01)
        + b"<LearningRate> " + f(0.001) + b"<TimeOffsets> \x04" + struct.pack("<3i", 2, -1, 0)
        + b"<LinearParams> FM " + i(1) + i(4) + struct.pack("<4f", 1, 2, 3, 4)
        + b"<BiasParams> FV " + i(0) + b"<OrthonormalConstraint> " + f(-1.0)
        + b"<UseNaturalGradient> T<NumSamplesHistory> " + f(2000) + b"<AlphaInOut> " + f(4) + f(4)
        + b"<RankInOut> " + i(2) + i(1) + b"</TdnnComponent> ")
    assert (comp.input_dim(), comp.output_dim(), set(comp.params())) == (2, 1, {"linear_params"})


def test_tdnn_initialization():
    comp = from_config("component name=t type=TdnnComponent input-dim=50 output-dim=400 "
                       "time-offsets=0,3")
    assert comp.linear_params.shape == (400, 100) and comp.bias_params.shape == (400,)
    assert abs(comp.linear_params.std() - 0.1) < 0.005          # 1/sqrt(50 * 2)
    assert (comp.rank_in, comp.rank_out, comp.orthonormal_constraint) == (20, 80, 0.0)
    with pytest.raises(NetworkConfigError, match="repeated time-offsets"):
        from_config("component name=t type=TdnnComponent input-dim=2 output-dim=2 time-offsets=0,0")


def test_general_dropout_text_follows_kaldis_write():
    comp = from_config("component name=d type=GeneralDropoutComponent dim=6 dropout-proportion=0.0 "
                       "continuous=true")
    assert to_text(comp) == ("<GeneralDropoutComponent> <Dim> 6 <BlockDim> 6 <TimePeriod> 0 "
                             "<DropoutProportion> 0 <Continuous> </GeneralDropoutComponent> ")
    comp.test_mode = True
    assert to_text(comp).endswith("<TestMode> <Continuous> </GeneralDropoutComponent> ")
    spec = from_config("component name=s type=GeneralDropoutComponent dim=4 "
                       "specaugment-max-proportion=0.25")
    assert "<SpecAugmentMaxProportion> 0.25 <DropoutProportion>" not in to_text(spec)
    assert "<DropoutProportion> 0.5 <SpecAugmentMaxProportion> 0.25 </Gen" in to_text(spec)
