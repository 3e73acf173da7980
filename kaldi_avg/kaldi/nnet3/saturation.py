"""How saturated a network's sigmoid and tanh units are: the number `steps/nnet3/get_saturation.pl`
prints for `nnet3-am-info` of a model, which Kaldi's training scripts compare with
`--trainer.shrink-saturation-threshold` to decide on shrinkage (`should_do_shrinkage`,
docs/kaldi-formats.md 6.4).

Each sigmoid or tanh nonlinearity contributes one term, 1 - d / d_max, where d is the `mean=` that
the Info line prints for its `deriv-avg` (the mean over units of the average derivative, to 3
significant digits) and d_max the largest possible derivative (0.25 for a sigmoid, 1 for a tanh).
A SigmoidComponent or TanhComponent is one nonlinearity, a LstmNonlinearityComponent five (i_t,
f_t, o_t sigmoids; c_t, m_t tanhs). The result is the mean of the terms (each nonlinearity
counts once, whatever its number of units), and 0.0 when there is none.

What the script can read follows from what Info prints, so this reproduces its limits:
* statistics are printed only when the component's count is nonzero (a Sigmoid/Tanh also needs
  value and derivative averages of full dimension), so untrained components contribute nothing;
* a vector of fewer than 10 entries is printed without a mean, so components (or LSTM cells) of
  dimension below 10 contribute nothing: a network whose only nonlinearities are that small has
  saturation 0.0;
* the script takes the last `mean=` after `deriv-avg=` on a Sigmoid/Tanh line; where the line
  also has output-derivative statistics (`oderiv-rms`, printed after `deriv-avg`), that is the
  mean of oderiv-rms. (LSTM lines are parsed within each nonlinearity's braces, where
  `deriv-avg` is the last summary.)
Like the script (whose failure stops Kaldi's training), a result outside [0, 1] is an error.
"""
from __future__ import annotations

import numpy as np

from .components.base import summary_mean
from .components.nonlinear import SigmoidComponent, TanhComponent
from .components.recurrent import LSTM_NONLINEARITIES, LstmNonlinearityComponent
from .nnet import Nnet

MAX_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0}


def _printed(avg) -> float | None:
    """The `mean=` value as printed (3 significant digits) and read back, or None if not printed."""
    mean = summary_mean(avg)
    return None if mean is None else float("%.3g" % mean)


def saturation_terms(nnet: Nnet) -> list[tuple[str, float]]:
    """(`component` or `component:nonlinearity`, 1 - deriv-avg mean / max derivative) for every
    nonlinearity whose statistics get_saturation.pl can read, in component order."""
    terms: list[tuple[str, float]] = []
    for name, c in nnet.components.items():
        if isinstance(c, (SigmoidComponent, TanhComponent)):
            kind = "sigmoid" if isinstance(c, SigmoidComponent) else "tanh"
            if not (c.count > 0 and np.size(c.value_avg) == c.dim and np.size(c.deriv_avg) == c.dim):
                continue
            printed_oderiv = c.oderiv_count > 0 and np.size(c.oderiv_rms) == c.dim
            mean = _printed(c.oderiv_rms if printed_oderiv else c.deriv_avg)
            if mean is not None:
                terms.append((name, 1.0 - mean / MAX_DERIVATIVE[kind]))
        elif isinstance(c, LstmNonlinearityComponent):
            if c.count == 0:
                continue
            for i, nonlin in enumerate(LSTM_NONLINEARITIES):
                mean = _printed(np.asarray(c.deriv_avg)[i])
                if mean is not None:
                    kind = nonlin.rsplit("_", 1)[1]
                    terms.append((f"{name}:{nonlin}", 1.0 - mean / MAX_DERIVATIVE[kind]))
    return terms


def saturation(nnet: Nnet) -> float:
    """get_saturation.pl's number for `nnet` (see the module docstring): the mean over its sigmoid
    and tanh nonlinearities of 1 - deriv-avg/max-deriv; 0.0 when no statistics can be read
    (e.g. all counts zero). Raises ValueError for a result outside [0, 1], as the script fails."""
    terms = saturation_terms(nnet)
    if not terms:
        return 0.0
    value = float("%.15g" % (sum(t for _, t in terms) / len(terms)))  # as Perl prints it
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"bad saturation value {value} (get_saturation.pl would fail): "
                         + ", ".join(f"{n}={t:g}" for n, t in terms))
    return value
