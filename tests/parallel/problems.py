"""Small seeded training problems for the algorithm oracles (shared by the simulated and MPI tests)."""
from __future__ import annotations

import torch

from kaldi_avg.parallel import FlatParams, LocalCommunicator, Replica, make_algorithm

N_FEATURES = 5


def batch(worker: int, step: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Worker `worker`'s minibatch number `step`: a noisy linear regression, independent of call order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + worker * 7919 + step)
    x = torch.randn(size, N_FEATURES, generator=g, dtype=torch.float64)
    w = torch.arange(1, N_FEATURES + 1, dtype=torch.float64) / N_FEATURES
    y = x @ w + 0.1 * torch.randn(size, generator=g, dtype=torch.float64)
    return x, y.unsqueeze(1)


def make_model(hidden: int = 0) -> torch.nn.Module:
    """The same initial model every time, from a private generator (ranks may be threads)."""
    if hidden:
        model = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    else:
        model = torch.nn.Linear(N_FEATURES, 1)
    model = model.double()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The per-parameter state tensors of a torch optimizer (momentum buffers, Adam moments, ...),
    in a fixed order; scalar entries such as step counters are left out (`Replica.optimizer_state`)."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            for _, value in sorted(optimizer.state.get(p, {}).items()):
                if torch.is_tensor(value) and value.shape == p.shape and value.is_floating_point():
                    out.append(value)
    return out


class RegressionLearner:
    """One worker: a tiny model on flat buffers, plain SGD (or momentum), its own data stream."""

    def __init__(self, worker: int, batch_size: int = 8, lr: float = 0.05, momentum: float = 0.0,
                 hidden: int = 0, seed: int = 0, hooks: bool = True, loss: str = "mean") -> None:
        self.worker, self.batch_size, self.seed, self.loss = worker, batch_size, seed, loss
        self.model = make_model(hidden)
        self.flat = FlatParams(self.model.parameters())
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.replica = Replica(self.flat.params, self.flat.grads, tuple(self.flat.parameters) if hooks else (),
                               lambda: optimizer_state_tensors(self.optimizer))
        self.step = 0

    def backward(self) -> int:
        self.flat.zero_grad()
        x, y = batch(self.worker, self.step, self.batch_size, self.seed)
        torch.nn.functional.mse_loss(self.model(x), y, reduction=self.loss).backward()
        self.step += 1
        return self.batch_size

    def update(self) -> None:
        self.optimizer.step()


def train_single_process(workers: int, steps: int, batch_size: int | list[int] = 8, lr: float = 0.05,
                         hidden: int = 0, seed: int = 0, momentum: float = 0.0) -> torch.Tensor:
    """The SSGD oracle: one process, batch = all workers' minibatches of each step concatenated
    (mean loss over the combined batch)."""
    sizes = batch_size if isinstance(batch_size, list) else [batch_size] * workers
    learner = RegressionLearner(0, lr=lr, hidden=hidden, seed=seed, momentum=momentum)
    for step in range(steps):
        parts = [batch(w, step, sizes[w], seed) for w in range(workers)]
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        learner.flat.zero_grad()
        torch.nn.functional.mse_loss(learner.model(x), y).backward()
        learner.update()
    return learner.flat.params.clone()


def drive(algorithm, learners, steps: int) -> None:
    """Set up, then the driver's loop (see kaldi_avg.parallel.base) for `steps` steps."""
    algorithm.setup([learner.replica for learner in learners])
    drive_units(algorithm, learners, steps)


def drive_units(algorithm, learners, steps: int) -> None:
    """`steps` rounds in which each unit of the algorithm (all replicas, a group, or one worker) takes
    one step, in unit order: a deterministic schedule for synchronous and asynchronous algorithms."""
    for _ in range(steps):
        for unit in algorithm.units():
            counts = [learners[k].backward() for k in unit]
            algorithm.after_backward(counts, unit)
            for k in unit:
                with algorithm.local_update():
                    learners[k].update()
            algorithm.after_step(counts, unit)


def simulate_lockstep(name: str, workers: int, steps: int, learner_options: dict | None = None,
                      finalize: bool = False, **options) -> list[torch.Tensor]:
    """Run a synchronous algorithm on `workers` simulated workers; return their parameters."""
    learners = [RegressionLearner(w, **(learner_options or {})) for w in range(workers)]
    algorithm = make_algorithm(name, LocalCommunicator(), workers, **options)
    drive(algorithm, learners, steps)
    if finalize:
        algorithm.finalize()
    return [learner.flat.params.clone() for learner in learners]
