"""Oracles for the pure arithmetic (spec §5): averages, Kaldi's job selection, BMUF, EASGD, gossip."""
from __future__ import annotations

import math

import pytest
import torch

from kaldi_avg.parallel.averaging import (
    accepted_mask,
    average_accepted,
    best_index,
    block_momentum_from_time_constant,
    bmuf_block_update_,
    centre_update_,
    default_block_momentum,
    elastic_difference,
    frame_weighted_mean,
    mean,
    pairwise_delta,
    select_best,
    staleness_scale,
)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
def test_rank_r_holding_r_averages_exactly(n):
    tensors = [torch.full((100,), float(r)) for r in range(n)]
    assert torch.equal(mean(tensors), torch.full((100,), (n - 1) / 2))


def test_frame_weighted_mean_weights_by_frames_and_falls_back_to_uniform():
    a, b = torch.tensor([0.0, 4.0]), torch.tensor([8.0, 0.0])
    assert torch.equal(frame_weighted_mean([a, b], [3, 1]), torch.tensor([2.0, 3.0]))
    assert torch.equal(frame_weighted_mean([a, b], [0, 0]), torch.tensor([4.0, 2.0]))


def test_best_index_is_first_maximum_and_skips_idle_and_diverged_jobs():
    assert best_index([-2.0, -1.0, -1.0]) == 1
    assert best_index([None, -3.0, float("nan"), -4.0]) == 1
    with pytest.raises(ValueError):
        best_index([None, None])


def test_acceptance_threshold_is_inclusive_like_get_successful_models():
    assert accepted_mask([-1.0, -2.0, -2.0001, None, float("nan")], threshold=1.0) == [True, True, False, False, False]
    inf = float("inf")
    assert accepted_mask([-inf, -1.5, None], threshold=1.0) == [False, True, False]
    assert accepted_mask([-inf, -inf, None], threshold=1.0) == [True, True, False]   # no job saw a frame


def test_kaldi_average_and_selection():
    flats = [torch.full((3,), float(v)) for v in (1, 2, 30)]
    objectives = [-1.2, -1.0, -5.0]
    assert torch.equal(average_accepted(flats, objectives), torch.full((3,), 1.5))
    assert torch.equal(select_best(flats, objectives), flats[1])
    assert select_best(flats, objectives) is not flats[1]


def run_blocks(start, blocks, block_momentum, block_lr, nesterov, nbm_form="paper"):
    """Apply BMUF to a sequence of worker averages; return the start points φ(t) and momenta Δ(t)."""
    start, model, momentum = start.clone(), start.clone(), torch.zeros_like(start)
    starts, momenta = [start.clone()], [momentum.clone()]
    for average in blocks:
        bmuf_block_update_(start, momentum, model, average(start), block_momentum, block_lr, nesterov, nbm_form)
        starts.append(start.clone())
        momenta.append(momentum.clone())
    return starts, momenta


def test_bmuf_without_block_momentum_is_model_averaging():
    start = torch.randn(10, dtype=torch.float64)
    average = torch.randn(10, dtype=torch.float64)
    model, momentum = start.clone(), torch.zeros_like(start)
    bmuf_block_update_(start, momentum, model, average, 0.0, 1.0, nesterov=False)
    assert torch.allclose(start, average, rtol=0, atol=1e-15)
    assert torch.allclose(model, average, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_bmuf_constant_block_step_reaches_n_zeta_g(n):
    g = torch.full((4,), 0.01, dtype=torch.float64)
    zeta = 1.0
    starts, _ = run_blocks(torch.zeros(4, dtype=torch.float64), [lambda s: s + g] * 400,
                           default_block_momentum(n), zeta, nesterov=False)
    assert torch.allclose(starts[-1] - starts[-2], n * zeta * g, rtol=1e-9)


def test_paper_nbm_is_reparametrized_nesterov_and_cntk_form_adds_the_lookahead_each_block():
    eta = 0.75
    averages = [torch.randn(6, dtype=torch.float64) for _ in range(8)]
    blocks = [lambda s, a=a: s + a for a in averages]
    paper, deltas = run_blocks(torch.zeros(6, dtype=torch.float64), blocks, eta, 1.0, nesterov=True)
    for t in range(2, len(paper)):   # φ(t) = φ(t−1) + (1 + η_b)Δ(t) − η_b Δ(t−1)
        expected = paper[t - 1] + (1 + eta) * deltas[t] - eta * deltas[t - 1]
        assert torch.allclose(paper[t], expected, atol=1e-12)
    cntk, cntk_deltas = run_blocks(torch.zeros(6, dtype=torch.float64), blocks, eta, 1.0, nesterov=True,
                                   nbm_form="cntk")
    for t in range(1, len(cntk)):    # φ(t) = φ(t−1) + (1 + η_b)Δ(t)
        assert torch.allclose(cntk[t], cntk[t - 1] + (1 + eta) * cntk_deltas[t], atol=1e-12)


def test_cntk_nbm_steady_step_is_about_one_plus_eta_times_cbm():
    n, g = 8, torch.full((2,), 0.001, dtype=torch.float64)
    eta = default_block_momentum(n)
    cntk, _ = run_blocks(torch.zeros(2, dtype=torch.float64), [lambda s: s + g] * 600, eta, 1.0, True, "cntk")
    assert torch.allclose(cntk[-1] - cntk[-2], (1 + eta) * n * g, rtol=1e-6)


def test_unknown_nbm_form_is_rejected():
    z = torch.zeros(2)
    with pytest.raises(ValueError):
        bmuf_block_update_(z.clone(), z.clone(), z.clone(), z.clone(), 0.5, 1.0, True, "other")


def test_block_momentum_defaults_and_time_constant():
    assert [default_block_momentum(n) for n in (1, 2, 4, 8)] == [0.0, 0.5, 0.75, 0.875]
    assert math.isclose(block_momentum_from_time_constant(1000, 1000 / math.log(2)), 0.5)


def test_easgd_centre_with_beta_one_is_the_workers_mean_and_elastic_step_is_symmetric():
    centre = torch.tensor([1.0, 2.0])
    workers_mean = torch.tensor([5.0, -1.0])
    centre_update_(centre, workers_mean, beta=1.0)
    assert torch.equal(centre, workers_mean)
    x, c = torch.tensor([4.0]), torch.tensor([2.0])
    e = elastic_difference(x, c, 0.25)
    assert torch.equal(x - e, torch.tensor([3.5])) and torch.equal(c + e, torch.tensor([2.5]))


def test_pairwise_delta_preserves_the_sum_exactly_and_averages():
    xi = torch.tensor([3.0, -8.0, 0.5, 1024.0], dtype=torch.float64)
    xj = torch.tensor([1.0, 6.0, 0.25, -2.0], dtype=torch.float64)
    ai, aj = xi + pairwise_delta(xi, xj), xj + pairwise_delta(xj, xi)
    assert torch.equal(ai + aj, xi + xj)
    assert torch.equal(ai, (xi + xj) / 2) and torch.equal(aj, ai)
    moved = xi - 0.5   # the compute thread stepped meanwhile: the sum is still preserved
    assert torch.equal(moved + pairwise_delta(xi, xj) + aj, moved + xj)


def test_staleness_scale():
    assert [staleness_scale(s) for s in (0, 1, 4)] == [1.0, 1.0, 0.25]
