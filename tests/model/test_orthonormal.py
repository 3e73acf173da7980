"""constrain_orthonormal against a direct numpy transcription of the update in
kaldi_avg/model/orthonormal.py's docstring (Kaldi's ConstrainOrthonormalInternal)."""
import random

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.orthonormal import constrain_matrix, constrain_orthonormal, constrained_ops


def numpy_step(M, c):
    P = M @ M.T
    nu = 0.125
    if c < 0:
        alpha2 = np.trace(P @ P) / np.trace(P)
        ratio = np.trace(P @ P) * P.shape[0] / np.trace(P) ** 2
        nu *= (0.5 if ratio > 1.02 else 1.0) * (0.5 if ratio > 1.1 else 1.0)
    else:
        alpha2 = c * c
    return M - 4 * nu / alpha2 * (P - alpha2 * np.eye(P.shape[0])) @ M


@pytest.mark.parametrize("c", [-1.0, 1.0, 0.5])
@pytest.mark.parametrize("near", [True, False], ids=["near", "far"])
def test_one_step_equals_the_formula(c, near):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 9))
    if near:   # close to semi-orthogonal: exercises the full update speed
        M = np.linalg.qr(M.T)[0].T * 0.8 + 0.01 * rng.normal(size=(5, 9))
    got = constrain_matrix(torch.from_numpy(M), c).numpy()
    assert np.abs(got - numpy_step(M, c)).max() < 1e-12


def test_repeated_steps_reach_semi_orthogonality():
    M = torch.randn(6, 20, dtype=torch.float64) * 0.3
    for _ in range(30):
        M = constrain_matrix(M, 1.0)
    assert torch.allclose(M @ M.t(), torch.eye(6, dtype=torch.float64), atol=1e-8)
    M = torch.randn(6, 20, dtype=torch.float64)
    for _ in range(30):
        M = constrain_matrix(M, -1.0)
    P = M @ M.t()
    assert torch.allclose(P, P[0, 0] * torch.eye(6, dtype=torch.float64), atol=1e-6)


CONFIG = """input-node name=input dim=8
component name=t type=TdnnComponent input-dim=8 output-dim=3 time-offsets=-1,0 use-bias=false orthonormal-constraint=-1.0
component-node name=t component=t input=input
component name=l type=LinearComponent input-dim=3 output-dim=10 orthonormal-constraint=1.0
component-node name=l component=l input=t
component name=a type=NaturalGradientAffineComponent input-dim=10 output-dim=4
component-node name=a component=a input=l
output-node name=output input=a
"""


def test_module_level_selection_transposition_and_probability():
    m = NnetModule(Nnet.from_config(CONFIG, rng=np.random.default_rng(1)))
    assert [op.type_name for op in constrained_ops(m)] == ["TdnnComponent", "LinearComponent"]
    tall = m.op("l").linear_params.detach().double().numpy()   # 10 x 3: constrained as its transpose
    wide = m.op("t").linear_params.detach().double().numpy()
    untouched = m.op("a").linear_params.detach().clone()
    assert constrain_orthonormal(constrained_ops(m), probability=1.0) == 2
    assert np.abs(m.op("l").linear_params.detach().double().numpy() - numpy_step(tall.T, 1.0).T).max() < 1e-6
    assert np.abs(m.op("t").linear_params.detach().double().numpy() - numpy_step(wide, -1.0)).max() < 1e-6
    assert torch.equal(m.op("a").linear_params, untouched)
    counts = [constrain_orthonormal(constrained_ops(m), random.Random(s)) for s in range(400)]
    assert 0.2 < sum(counts) / (2 * 400) < 0.3
