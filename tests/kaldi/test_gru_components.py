"""GruNonlinearityComponent and OutputGruNonlinearityComponent (docs/kaldi-formats.md 4.20):
the token order of Kaldi's Write in text and binary, nnet3-init's defaults and checks."""
import struct

import numpy as np
import pytest

from kaldi_avg.kaldi.binary import KaldiWriter
from kaldi_avg.kaldi.nnet3.components import component_from_config
from kaldi_avg.kaldi.nnet3.config import ConfigLine, NetworkConfigError


def from_config(line, seed=0):
    cfg = ConfigLine.parse(line, "test.config:1")
    cfg.get_str("name")
    return component_from_config(cfg, np.random.default_rng(seed))


def to_bytes(comp, binary):
    w = KaldiWriter(binary)
    comp.write(w)
    return w.getvalue()


f32 = lambda v: b"\x04" + struct.pack("<f", v)
f64 = lambda v: b"\x08" + struct.pack("<d", v)
i32 = lambda v: b"\x04" + struct.pack("<i", v)


def test_fresh_output_gru_text_and_binary():
    comp = from_config("component name=g.gru_nonlin type=OutputGruNonlinearityComponent cell-dim=2  max-change=0.75")
    comp.w_h[:] = [0.5, -1]
    assert to_bytes(comp, False).decode() == (
        "<OutputGruNonlinearityComponent> <MaxChange> 0.75 <LearningRate> 0.001 <CellDim> 2 "
        "<w_h>  [ 0.5 -1 ]\n<ValueAvg>  [ 0 0 ]\n<DerivAvg>  [ 0 0 ]\n<SelfRepairTotal> 0 "
        "<Count> 0 <SelfRepairThreshold> 0.2 <SelfRepairScale> 1e-05 <Alpha> 4 <Rank> 8 "
        "<UpdatePeriod> 10 </OutputGruNonlinearityComponent> ")
    vec = lambda *v: b"FV " + i32(len(v)) + struct.pack(f"<{len(v)}f", *v)
    assert to_bytes(comp, True) == (
        b"<OutputGruNonlinearityComponent> <MaxChange> " + f32(0.75) + b"<LearningRate> " + f32(0.001)
        + b"<CellDim> " + i32(2) + b"<w_h> " + vec(0.5, -1) + b"<ValueAvg> " + vec(0, 0)
        + b"<DerivAvg> " + vec(0, 0) + b"<SelfRepairTotal> " + f64(0) + b"<Count> " + f64(0)
        + b"<SelfRepairThreshold> " + f32(0.2) + b"<SelfRepairScale> " + f32(1e-05)
        + b"<Alpha> " + f32(4) + b"<Rank> " + i32(8) + b"<UpdatePeriod> " + i32(10)
        + b"</OutputGruNonlinearityComponent> ")
    assert (comp.input_dim(), comp.output_dim()) == (6, 4)


def test_fresh_gru_text():
    comp = from_config("component name=g type=GruNonlinearityComponent cell-dim=2 recurrent-dim=1 "
                       "self-repair-scale=0.5 rank-in=3")
    comp.w_h[:] = [[0.25], [2]]
    assert to_bytes(comp, False).decode() == (
        "<GruNonlinearityComponent> <LearningRate> 0.001 <CellDim> 2 <RecurrentDim> 1 "
        "<w_h>  [\n  0.25 \n  2 ]\n<ValueAvg>  [ 0 0 ]\n<DerivAvg>  [ 0 0 ]\n<SelfRepairTotal> 0 "
        "<Count> 0 <SelfRepairThreshold> 0.2 <SelfRepairScale> 0.5 <Alpha> 4 <RankInOut> 3 80 "
        "<UpdatePeriod> 4 </GruNonlinearityComponent> ")
    assert (comp.input_dim(), comp.output_dim()) == (3 * 2 + 2 * 1, 4)


def test_initialization():
    gru = from_config("component name=g type=GruNonlinearityComponent cell-dim=400")
    assert gru.w_h.shape == (400, 400) and gru.recurrent_dim == 400 and gru.input_dim() == 1600
    assert abs(gru.w_h.std() - 0.05) < 0.002              # 1/sqrt(cell-dim)
    ogru = from_config("component name=g type=OutputGruNonlinearityComponent cell-dim=10000 "
                       "param-mean=0.5 param-stddev=0.25")
    assert abs(ogru.w_h.mean() - 0.5) < 0.01 and abs(ogru.w_h.std() - 0.25) < 0.01


@pytest.mark.parametrize("line, message", [
    ("type=GruNonlinearityComponent recurrent-dim=2", "cell-dim > 0 is required"),
    ("type=GruNonlinearityComponent cell-dim=2 recurrent-dim=3", "Invalid values for cell-dim"),
    ("type=OutputGruNonlinearityComponent cell-dim=2 recurrent-dim=1", "does not accept"),
    ("type=OutputGruNonlinearityComponent cell-dim=2 self-repair-scale=-1", "self-repair"),
])
def test_bad_config_lines(line, message):
    with pytest.raises(NetworkConfigError, match=message):
        from_config(f"component name=g {line}")
