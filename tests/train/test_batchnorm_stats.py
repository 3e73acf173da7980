"""BatchNorm statistics as Kaldi's training leaves them in a model (docs/kaldi-formats.md 6.5,
6.6): nnet3-train scales them by --batchnorm-stats-scale 0.8 after every update, nnet3-combine
scores with each minibatch's own statistics and then recomputes every statistic on the combine
set."""
import numpy as np
import torch

from kaldi_avg.data.collate import Minibatch
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.combine import combine
from kaldi_avg.train.diagnostics import TrainLog
from kaldi_avg.train.learner import Learner
from kaldi_avg.train.objective import compute_prob

from ..model.networks import randomized

XCONFIG = """input dim=3 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=5
sigmoid-layer name=s dim=4
output-layer name=output dim=4
"""


def network():
    return randomized(build_nnet(XCONFIG, "bn.xconfig", seed=2), seed=2)


def minibatches(num, chunks=3, width=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(num):
        feats = torch.from_numpy(rng.normal(3.0, 2.0, (chunks, width + 2, 3)).astype(np.float32))
        targets = torch.from_numpy(rng.integers(0, 4, (chunks, width)))
        out.append(Minibatch(feats, targets, torch.ones(chunks, width), None, float(chunks * width), 1,
                             tuple(f"u{k}-{c}" for c in range(chunks)), k + 1))
    return out


def batchnorm(module):
    [op] = module.batchnorm_ops()
    return op


def test_every_update_scales_the_batchnorm_statistics_by_0_8():
    learner = Learner(network())
    learner.start(iter(minibatches(3)), TrainLog("nnet3-train"), learning_rate=0.01, momentum=0.0,
                  max_param_change=2.0, l2_regularize_factor=1.0)
    rows = 3 * 4   # one minibatch's frames
    for k, want in enumerate([0.8 * rows, 0.8 * (0.8 * rows + rows), 0.8 * (0.8 * (0.8 * rows + rows) + rows)]):
        learner.backward()
        learner.update()
        assert abs(float(batchnorm(learner.module).stats_count) - want) < 1e-9, k


def test_combination_scores_with_minibatch_statistics():
    """The stored statistics do not matter to the combination's objective (BatchNorm not in test mode)."""
    module = NnetModule(network())
    batches = minibatches(2, seed=1)
    op = batchnorm(module)
    with torch.no_grad():
        op.stats_mean.fill_(100.0)
        op.stats_var.fill_(1e-3)
    test_mode = compute_prob(module, batches).objf_per_frame
    own = compute_prob(module, batches, batchnorm_test_mode=False).objf_per_frame
    with torch.no_grad():
        op.stats_mean.fill_(-5.0)
    assert compute_prob(module, batches, batchnorm_test_mode=False).objf_per_frame == own != test_mode


def test_combination_recomputes_the_statistics_on_the_combine_set():
    models = [NnetModule(network()) for _ in range(3)]
    for seed, m in enumerate(models):
        learner_batches = minibatches(2, seed=10 + seed)
        m.train()
        with torch.no_grad():
            for mb in learner_batches:
                m(mb.features, mb.left_context, mb.targets.shape[1])
    batches = minibatches(4, seed=3)
    best, _ = combine(models, batches)
    op = batchnorm(best)
    # The BatchNorm's input on the combine set, from the chosen model in training mode.
    inputs = []

    def keep(_, args):
        inputs.append(args[0].detach().reshape(-1, 5))
    handle = op.register_forward_pre_hook(keep)
    best.train()
    with torch.no_grad():
        for mb in batches:
            best(mb.features, mb.left_context, mb.targets.shape[1])
    handle.remove()
    x = torch.cat(inputs[:len(batches)]).double()
    # (the pass above added the same statistics once more: compare with half of them)
    assert float(op.stats_count) == 2 * x.shape[0] == 2 * 4 * 3 * 4
    torch.testing.assert_close(op.stats_sum / 2, x.sum(0))
    torch.testing.assert_close(op.stats_sumsq / 2, (x * x).sum(0))
    sigmoid = best.op("s.sigmoid")
    assert float(sigmoid.act_count) == 2 * 4 * 3 * 4   # every statistic recomputed, not only BatchNorm's


def test_diagnostics_of_the_live_module_equal_those_of_the_model_it_saves():
    """compute_prob_*.N.log is nnet3-compute-prob on N.mdl: test mode normalizes with the
    statistics training accumulated (those written into N.mdl), not the initial model's."""
    from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes
    learner = Learner(network())
    learner.start(iter(minibatches(3)), TrainLog("nnet3-train"), learning_rate=0.01, momentum=0.0,
                  max_param_change=2.0, l2_regularize_factor=1.0)
    initial = compute_prob(learner.module, minibatches(2, seed=5))
    for _ in range(3):
        learner.backward()
        learner.update()
    batches = minibatches(2, seed=5)
    live = compute_prob(learner.module, batches)
    learner.module.write_back()
    saved = NnetModule(read_nnet3_bytes(Nnet3Model(learner.module.nnet, None).to_bytes(True), "N.mdl").nnet)
    from_file = compute_prob(saved, batches)
    assert abs(live.objf_per_frame - from_file.objf_per_frame) < 1e-5 * abs(from_file.objf_per_frame)
    assert live.accuracy == from_file.accuracy
    assert abs(live.objf_per_frame - initial.objf_per_frame) > 1e-3   # the statistics did change
