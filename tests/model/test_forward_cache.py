"""A minibatch's forward cache (model/graph.py `forward_outputs(cache=...)`, data/diagnostics.py
`ForwardCache`): the values of the fixed nodes (an LDA) are computed once per minibatch and reused
by later evaluations without gradients; results are bit-identical, and a cache filled with
other fixed tensors, or a computation with gradients, does not use it."""
import numpy as np
import torch

from kaldi_avg.data.collate import Minibatch
from kaldi_avg.data.diagnostics import ForwardCache
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.objective import compute_prob, forward_minibatch

from .networks import randomized, spec_5_10_config


def network(seed=0, lda_seed=1) -> Nnet:
    nnet = randomized(Nnet.from_config(spec_5_10_config()), seed=seed)
    lda = nnet.components["lda"]
    rng = np.random.default_rng(lda_seed)
    lda.linear_params[...] = rng.normal(0, 0.5, lda.linear_params.shape)
    lda.bias_params[...] = rng.normal(0, 0.5, lda.bias_params.shape)
    return nnet


def minibatches(num=3, chunks=4, width=5, budget=1 << 30, seed=0):
    rng = np.random.default_rng(seed)
    shared = [budget]
    out = []
    for k in range(num):
        feats = torch.from_numpy(rng.normal(0, 1, (chunks, width + 4, 4)).astype(np.float32))
        targets = torch.from_numpy(rng.integers(0, 8, (chunks, width)))
        out.append(Minibatch(feats, targets, torch.ones(chunks, width), None, float(chunks * width), 1,
                             tuple(f"u{k}-{c}" for c in range(chunks)), k + 1, cache=ForwardCache(shared)))
    return out


def uncached(batches):
    return [Minibatch(mb.features, mb.targets, mb.weights, None, mb.num_frames, mb.left_context, mb.keys,
                      mb.position) for mb in batches]


def test_the_lda_is_computed_once_and_the_results_are_identical():
    module = NnetModule(network())
    assert module._fixed == {"lda": ()}
    batches = minibatches()
    want = compute_prob(module, uncached(batches))
    calls = []
    lda = module.op("lda")
    hook = lda.register_forward_hook(lambda *a: calls.append(1))
    for _ in range(3):
        got = compute_prob(module, batches)
        assert (got.objf, got.correct, got.frames) == (want.objf, want.correct, want.frames)
    hook.remove()
    assert len(calls) == len(batches)          # the first pass only
    assert all(len(mb.cache) == 1 for mb in batches)


def test_another_model_with_the_same_lda_reuses_it_and_one_with_another_lda_does_not():
    batches = minibatches()
    compute_prob(NnetModule(network(seed=0)), batches)
    same_lda = NnetModule(network(seed=5))
    other_lda = NnetModule(network(seed=5, lda_seed=2))
    for module in (same_lda, other_lda, same_lda):
        want = compute_prob(module, uncached(batches))
        got = compute_prob(module, batches)
        assert (got.objf, got.correct) == (want.objf, want.correct)
    out = [forward_minibatch(other_lda, mb) for mb in uncached(batches)]
    with torch.no_grad():
        assert all(torch.equal(forward_minibatch(other_lda, mb), o) for mb, o in zip(batches, out))


def test_training_computations_and_a_spent_budget_leave_the_cache_alone():
    module = NnetModule(network())
    batches = minibatches(budget=0)
    compute_prob(module, batches)
    assert all(len(mb.cache) == 0 for mb in batches)
    batches = minibatches()
    module.train()
    y = forward_minibatch(module, batches[0])
    assert y.requires_grad and len(batches[0].cache) == 0


CHAIN = """input-node name=input dim=4
component name=lda type=FixedAffineComponent input-dim=4 output-dim=6
component-node name=lda component=lda input=input
dim-range-node name=lda.part input-node=lda dim-offset=1 dim=4
component name=scale type=FixedScaleComponent dim=4 scale=2.0
component-node name=scale component=scale input=lda.part
component name=out type=NaturalGradientAffineComponent input-dim=4 output-dim=8
component-node name=out component=out input=scale
component name=sm type=LogSoftmaxComponent dim=8
component-node name=sm component=sm input=out
output-node name=output input=sm objective=linear
"""


def test_a_fixed_node_after_a_changed_one_is_computed_again():
    def module(lda_seed):
        nnet = Nnet.from_config(CHAIN, rng=np.random.default_rng(lda_seed))
        return NnetModule(nnet)
    a, b = module(1), module(2)
    assert a._fixed == {"lda": (), "scale": ("lda",)}
    assert torch.equal(a.op("scale").scales, b.op("scale").scales)
    assert not torch.equal(a.op("lda").linear_params, b.op("lda").linear_params)
    rng = np.random.default_rng(0)
    batches = [Minibatch(torch.from_numpy(rng.normal(0, 1, (3, 5, 4)).astype(np.float32)),
                         torch.from_numpy(rng.integers(0, 8, (3, 5))), torch.ones(3, 5), None, 15.0, 0,
                         ("u-0", "u-1", "u-2"), 1, cache=ForwardCache([1 << 30]))]
    for m in (a, b, a):
        want = compute_prob(m, uncached(batches))
        got = compute_prob(m, batches)
        assert (got.objf, got.correct) == (want.objf, want.correct)
