"""TimeHeightConvolutionComponent and SumBlockComponent: Kaldi's Write order, reading back,
nnet3-init semantics and ConvolutionModel::Check (docs/kaldi-formats.md 4.23)."""
import struct

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.config import NetworkConfigError

from .test_components import from_config, read_all, to_bytes, to_text

CONV = "component name=c type=TimeHeightConvolutionComponent "


def test_convolution_text_and_binary_follow_kaldis_write():
    comp = from_config(CONV + "num-filters-in=1 num-filters-out=2 height-in=2 height-out=2 "
                       "height-offsets=-1,0 time-offsets=-1,0 required-time-offsets=0 max-change=0.75")
    comp.linear_params[:] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    comp.bias_params[:] = [0.5, -0.5]
    assert to_text(comp) == (
        "<TimeHeightConvolutionComponent> <MaxChange> 0.75 <LearningRate> 0.001 <Model> <ConvolutionModel> "
        "<NumFiltersIn> 1 <NumFiltersOut> 2 <HeightIn> 2 <HeightOut> 2 <HeightSubsampleOut> 1 "
        "<Offsets> [ -1,-1 -1,0 0,-1 0,0 ]\n<RequiredTimeOffsets> [ 0 ]\n</ConvolutionModel> "
        "<LinearParams>  [\n  1 2 3 4 \n  5 6 7 8 ]\n<BiasParams>  [ 0.5 -0.5 ]\n"
        "<MaxMemoryMb> 200 <UseNaturalGradient> T <NumMinibatchesHistory> 4 <AlphaInOut> 4 4 "
        "<RankInOut> 3 1 </TimeHeightConvolutionComponent> ")
    f = lambda v: b"\x04" + struct.pack("<f", v)
    i = lambda v: b"\x04" + struct.pack("<i", v)
    assert to_bytes(comp, True) == (
        b"<TimeHeightConvolutionComponent> <MaxChange> " + f(0.75) + b"<LearningRate> " + f(0.001)
        + b"<Model> <ConvolutionModel> <NumFiltersIn> " + i(1) + b"<NumFiltersOut> " + i(2)
        + b"<HeightIn> " + i(2) + b"<HeightOut> " + i(2) + b"<HeightSubsampleOut> " + i(1)
        + b"<Offsets> \x04" + struct.pack("<9i", 4, -1, -1, -1, 0, 0, -1, 0, 0)
        + b"<RequiredTimeOffsets> \x04" + struct.pack("<2i", 1, 0) + b"</ConvolutionModel> "
        + b"<LinearParams> FM " + i(2) + i(4) + struct.pack("<8f", *range(1, 9))
        + b"<BiasParams> FV " + i(2) + struct.pack("<2f", 0.5, -0.5) + b"<MaxMemoryMb> " + f(200)
        + b"<UseNaturalGradient> T<NumMinibatchesHistory> " + f(4) + b"<AlphaInOut> " + f(4) + f(4)
        + b"<RankInOut> " + i(3) + i(1) + b"</TimeHeightConvolutionComponent> ")
    assert (comp.input_dim(), comp.output_dim(), comp.time_offsets) == (2, 4, (-1, 0))


def test_convolution_model_token_is_optional_on_read():
    """ConvolutionModel::Read takes <NumFiltersIn> in place of <ConvolutionModel>."""
    comp = from_config(CONV + "num-filters-in=1 num-filters-out=1 height-in=1 height-out=1 "
                       "height-offsets=0 time-offsets=0")
    text = to_text(comp).replace("<ConvolutionModel> ", "")
    assert to_text(read_all(text.encode(), False)) == to_text(comp)


def test_convolution_initialization():
    comp = from_config(CONV + "num-filters-in=16 num-filters-out=32 height-in=20 height-out=20 "
                       "height-offsets=-1,0,1 time-offsets=-1,0,1 required-time-offsets=0")
    assert comp.linear_params.shape == (32, 144) and not comp.bias_params.any()
    assert abs(comp.linear_params.std() - 1 / 12) < 0.004          # 1/sqrt(16 * 9)
    assert (comp.rank_in, comp.rank_out, comp.num_minibatches_history) == (73, 16, 4.0)   # (145+1)/2, (32+1)/2
    assert comp.offsets == tuple((t, h) for t in (-1, 0, 1) for h in (-1, 0, 1))
    assert comp.required_time_offsets == (0,)
    sparse = from_config(CONV + "num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 "
                         "offsets=1,0;0,0;-1,1;0,-1 init-unit=true bias-stddev=1.0")
    assert sparse.offsets == ((-1, 1), (0, -1), (0, 0), (1, 0))     # sorted
    assert sparse.required_time_offsets == (-1, 0, 1)                # default: all of them
    assert np.array_equal(sparse.linear_params[:, 4:6], np.eye(2)) and sparse.linear_params.sum() == 2
    assert sparse.bias_params.any()


@pytest.mark.parametrize("options, message", [
    ("num-filters-in=2 num-filters-out=2 height-in=3", "expected all of"),
    ("num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 height-offsets=0", "expected either"),
    ("num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 height-offsets=1,0 time-offsets=0",
     "sorted and unique"),
    ("num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 offsets=0,0;0,0", "repeated offset"),
    ("num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 height-offsets=0 time-offsets=0 "
     "required-time-offsets=1", "subset"),
    ("num-filters-in=2 num-filters-out=2 height-in=3 height-out=3 height-offsets=5 time-offsets=0",
     "reads no input"),
    ("num-filters-in=2 num-filters-out=2 height-in=4 height-out=2 height-offsets=0,9 time-offsets=0",
     "never used"),
    ("num-filters-in=2 num-filters-out=3 height-in=3 height-out=3 height-offsets=0 time-offsets=0 "
     "init-unit=true", "init-unit"),
])
def test_convolution_bad_initializers_are_refused(options, message):
    with pytest.raises(NetworkConfigError, match=message):
        from_config(CONV + options)


def test_sum_block_follows_kaldis_write_and_init():
    comp = from_config("component name=a type=SumBlockComponent input-dim=36 output-dim=4 scale=0.25")
    assert to_text(comp) == "<SumBlockComponent> <InputDim> 36 <OutputDim> 4 <Scale> 0.25 </SumBlockComponent> "
    assert (comp.input_dim(), comp.output_dim()) == (36, 4)
    with pytest.raises(NetworkConfigError, match="input-dim=10 output-dim=4"):
        from_config("component name=a type=SumBlockComponent input-dim=10 output-dim=4")
