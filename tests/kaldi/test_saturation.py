"""get_saturation.pl's number from component statistics (docs/kaldi-formats.md 6.4)."""
import re

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.components import (
    LstmNonlinearityComponent,
    RectifiedLinearComponent,
    SigmoidComponent,
    TanhComponent,
)
from kaldi_avg.kaldi.nnet3.components.base import summarize_vector
from kaldi_avg.kaldi.nnet3.descriptor import NodeRef
from kaldi_avg.kaldi.nnet3.nnet import ComponentNode, InputNode, Nnet, OutputNode
from kaldi_avg.kaldi.nnet3.saturation import saturation, saturation_terms
from kaldi_avg.train.schedule import shrink_value


def network(**components):
    """A network holding the components, each fed by its own input (only statistics matter)."""
    nodes = []
    for name, c in components.items():
        nodes += [InputNode(f"in_{name}", c.input_dim()), ComponentNode(name, name, NodeRef(f"in_{name}"))]
    nodes.append(OutputNode("output", NodeRef(name)))
    return Nnet(nodes, dict(components))


def lstm(C, deriv_rows, count=100.0):
    return LstmNonlinearityComponent(
        peepholes=np.zeros((3, C), np.float32), value_avg=np.full((5, C), 0.5, np.float32),
        deriv_avg=np.array([np.full(C, d, np.float32) for d in deriv_rows]), count=count)


def nonlinear(cls, dim, deriv, count=50.0, **kw):
    return cls(dim=dim, value_avg=np.full(dim, 0.5, np.float32), deriv_avg=np.asarray(deriv, np.float32)
               * np.ones(dim, np.float32), count=count, **kw)


def test_all_zero_statistics_give_zero():
    assert saturation(network(l=lstm(12, [0] * 5, count=0.0))) == 0.0
    fresh = LstmNonlinearityComponent(peepholes=np.zeros((3, 12), np.float32))
    assert saturation(network(l=fresh, s=SigmoidComponent(dim=24))) == 0.0


def test_known_values():
    # Sigmoids (max derivative 0.25) at 0.2, 0.15, 0.05; tanhs (max 1) at 0.6, 0.3.
    net = network(l=lstm(12, [0.2, 0.15, 0.6, 0.05, 0.3]))
    terms = [1 - 0.2 / 0.25, 1 - 0.15 / 0.25, 1 - 0.6, 1 - 0.05 / 0.25, 1 - 0.3]
    assert saturation(net) == pytest.approx(np.mean(terms), abs=1e-12)
    assert [n for n, _ in saturation_terms(net)] == [
        "l:i_t_sigmoid", "l:f_t_sigmoid", "l:c_t_tanh", "l:o_t_sigmoid", "l:m_t_tanh"]
    # Each nonlinearity counts once: a Sigmoid and a Tanh component add one term each.
    net = network(l=lstm(12, [0.2, 0.15, 0.6, 0.05, 0.3]), s=nonlinear(SigmoidComponent, 24, 0.1),
                  t=nonlinear(TanhComponent, 24, 0.9), r=nonlinear(RectifiedLinearComponent, 24, 0.5))
    assert saturation(net) == pytest.approx(np.mean(terms + [1 - 0.1 / 0.25, 1 - 0.9]), abs=1e-12)


def test_means_are_read_to_three_digits():
    deriv = np.linspace(0.1, 0.1466, 10).astype(np.float32)     # mean 0.1233, printed as 0.123
    s = saturation(network(s=SigmoidComponent(dim=10, value_avg=deriv, deriv_avg=deriv, count=3.0)))
    assert s == 0.508 and s != pytest.approx(1 - deriv.mean() / 0.25)


def test_what_the_script_cannot_read_is_left_out():
    # Fewer than 10 units: Kaldi prints the values without a mean; count 0: no statistics.
    assert saturation(network(l=lstm(8, [0.01] * 5))) == 0.0
    assert saturation(network(s=nonlinear(SigmoidComponent, 9, 0.01))) == 0.0
    assert saturation(network(s=nonlinear(SigmoidComponent, 12, 0.01, count=0.0))) == 0.0
    both = network(a=nonlinear(TanhComponent, 9, 0.0), b=nonlinear(TanhComponent, 10, 0.75))
    assert saturation(both) == pytest.approx(0.25)


def test_sigmoid_line_with_oderiv_statistics_reads_the_last_mean():
    s = nonlinear(SigmoidComponent, 10, 0.2, oderiv_rms=np.full(10, 0.05, np.float32), oderiv_count=7.0)
    assert saturation(network(s=s)) == pytest.approx(1 - 0.05 / 0.25)
    s.oderiv_rms = np.full(10, 0.5, np.float32)  # reads as saturation -1: the script fails
    with pytest.raises(ValueError, match="bad saturation"):
        saturation(network(s=s))


def _parse_info_like_the_script(nnet) -> list[float]:
    """Saturation terms parsed from our nnet3-info lines, the way get_saturation.pl reads them."""
    terms = []
    for _name, c in nnet.components.items():
        line = c.info()
        if "type=SigmoidComponent" in line or "type=TanhComponent" in line:
            m = re.search(r"deriv-avg=.+mean=([^,]+),", line)
            if m:
                terms.append(1 - float(m.group(1)) / (0.25 if "Sigmoid" in line else 1.0))
        elif "type=LstmNonlinearityComponent" in line:
            for nonlin, top in (("i_t_sigmoid", 0.25), ("f_t_sigmoid", 0.25), ("o_t_sigmoid", 0.25),
                                ("c_t_tanh", 1.0), ("m_t_tanh", 1.0)):
                m = re.search(nonlin + r"=\{[^}]+deriv-avg=[^}]+mean=([^,]+),", line)
                if m:
                    terms.append(1 - float(m.group(1)) / top)
    return terms


def test_agrees_with_the_info_lines():
    rng = np.random.default_rng(3)
    comps = dict(
        l=LstmNonlinearityComponent(peepholes=np.zeros((3, 16), np.float32),
                                    value_avg=rng.uniform(0, 1, (5, 16)).astype(np.float32),
                                    deriv_avg=rng.uniform(0, 0.25, (5, 16)).astype(np.float32), count=7.0),
        s=SigmoidComponent(dim=12, value_avg=rng.uniform(0, 1, 12).astype(np.float32),
                           deriv_avg=rng.uniform(0, 0.25, 12).astype(np.float32), count=5.0),
        t=TanhComponent(dim=11, value_avg=rng.uniform(-1, 1, 11).astype(np.float32),
                        deriv_avg=rng.uniform(0, 1, 11).astype(np.float32), count=5.0,
                        oderiv_rms=rng.uniform(0, 0.1, 11).astype(np.float32), oderiv_count=3.0),
        small=SigmoidComponent(dim=4, value_avg=np.full(4, 0.5, np.float32),
                               deriv_avg=np.full(4, 0.1, np.float32), count=2.0))
    net = network(**comps)
    parsed = _parse_info_like_the_script(net)
    assert len(parsed) == 7
    assert sorted(t for _, t in saturation_terms(net)) == pytest.approx(sorted(parsed), abs=1e-12)
    assert saturation(net) == pytest.approx(np.mean(parsed), abs=1e-12)


def test_summarize_vector_format():
    assert summarize_vector(np.array([0.001, 0.5, 1.2, 15.0], np.float32)) == "[ 0.001 0.50 1.2 15 ]"
    s = summarize_vector(np.arange(1, 101, dtype=np.float32) / 100)
    assert s == ("[percentiles(0,1,2,5 10,20,50,80,90 95,98,99,100)=(0.01,0.01,0.02,0.05 "
                 "0.10,0.20,0.50,0.80,0.90 0.95,0.98,0.99,1.0), mean=0.505, stddev=0.289]")


def test_drives_shrinkage():
    saturated = network(l=lstm(12, [0.05, 0.05, 0.2, 0.05, 0.2]))   # 0.8
    fresh = network(l=lstm(12, [0.25, 0.25, 1.0, 0.25, 1.0]))       # 0.0
    assert saturation(saturated) == pytest.approx(0.8)
    assert shrink_value(3, 0.001, saturation(saturated)) == 0.99
    assert shrink_value(3, 0.001, saturation(fresh)) == 1.0
    assert shrink_value(0, 0.001, None) == 0.99
