"""SpecAugmentTimeMaskComponent and PermuteComponent: Kaldi's Write order, reading back,
nnet3-init semantics (docs/kaldi-formats.md 4.21, 4.22)."""
import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.components import ComponentError
from kaldi_avg.kaldi.nnet3.config import NetworkConfigError

from .test_components import from_config, read_all, to_bytes, to_text


def test_time_mask_text_follows_kaldis_write():
    comp = from_config("component name=t type=SpecAugmentTimeMaskComponent dim=6 "
                       "zeroed-proportion=0.2 time-mask-max-frames=20")
    assert to_text(comp) == ("<SpecAugmentTimeMaskComponent> <Dim> 6 <ZeroedProportion> 0.2 "
                             "<TimeMaskMaxFrames> 20 </SpecAugmentTimeMaskComponent> ")
    comp.test_mode = True
    assert to_text(comp).endswith("<TimeMaskMaxFrames> 20 <TestMode> </SpecAugmentTimeMaskComponent> ")
    defaults = from_config("component name=t type=SpecAugmentTimeMaskComponent dim=4")
    assert (defaults.zeroed_proportion, defaults.time_mask_max_frames) == (np.float32(0.25), 10)


def test_permute_text_follows_kaldis_write():
    comp = from_config("component name=p type=PermuteComponent column-map=0,4,5,1,6,7,2,8,9,3,10,11 ")
    assert comp.input_dim() == comp.output_dim() == 12
    assert to_text(comp) == ("<PermuteComponent> <ColumnMap> [ 0 4 5 1 6 7 2 8 9 3 10 11 ]\n"
                             "</PermuteComponent> ")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("line", [
    "component name=t type=SpecAugmentTimeMaskComponent dim=6 zeroed-proportion=0.1 time-mask-max-frames=3",
    "component name=p type=PermuteComponent column-map=2,0,1",
])
def test_round_trip(line, binary):
    comp = from_config(line)
    data = to_bytes(comp, binary)
    assert to_bytes(read_all(data, binary), binary) == data


@pytest.mark.parametrize("line", [
    "component name=p type=PermuteComponent column-map=0,0,1",
    "component name=t type=SpecAugmentTimeMaskComponent dim=6 time-mask-max-frames=1",
])
def test_invalid_values_are_refused(line):
    with pytest.raises((ComponentError, NetworkConfigError)):
        from_config(line)


def test_test_mode_is_not_a_config_option():
    with pytest.raises(NetworkConfigError, match="test-mode"):
        from_config("component name=t type=SpecAugmentTimeMaskComponent dim=6 test-mode=true")
