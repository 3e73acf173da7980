"""E6: measured α, β and collective times of kaldi-avg's real communicators against the α–β model (§4.1,
§4.5).

For each message size M: ping-pong (one-way time = round trip / 2), a full-duplex pairwise exchange
(ADPSGD's Sendrecv) and an in-place allreduce, each timed as the median of repetitions after a
warm-up. α and β are fitted to the ping-pong times by least squares (t = α + M·β). The allreduce is
compared with the ring model 2(N−1)α + 2(N−1)/N·M·β and reported as algbw = M/t and busbw =
algbw·2(N−1)/N (the nccl-tests convention, directly comparable to 1/β).

Communicators: "threads" (`InProcessGroup`, ranks as threads of one process: messages are tensor
copies in shared memory) and "mpi" (`mpiexec -n N` over mpi4py; this module is the MPI program).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..parallel import Communicator, InProcessGroup, make_communicator
from ..parallel.base import CommEvent
from ..parallel.simulate import CostModel

KB = 1024


def message_sizes(largest: int, smallest: int = KB) -> list[int]:
    sizes, m = [], smallest
    while m <= largest:
        sizes.append(m)
        m *= 4
    return sizes


def repetitions(nbytes: int) -> int:
    """Enough repetitions for a stable median, fewer for big messages."""
    return max(3, min(50, (64 * 2**20) // max(nbytes, 1)))


def _timed(comm: Communicator, op: Callable[[], None], reps: int) -> float:
    op()  # warm-up
    times = []
    for _ in range(reps):
        comm.barrier()
        t0 = time.perf_counter()
        op()
        times.append(time.perf_counter() - t0)
    # the slowest rank finishes the operation: take each repetition's max over ranks
    per_rank = comm.allgather_object(times)
    return statistics.median(max(values) for values in zip(*per_rank))


def measure(comm: Communicator, sizes: list[int]) -> list[dict[str, Any]]:
    """Every rank calls this; every rank gets the same rows."""
    rows = []
    peer = comm.rank ^ 1
    for nbytes in sizes:
        send = torch.ones(nbytes // 4, dtype=torch.float32)
        recv = torch.empty_like(send)
        reps = repetitions(nbytes)
        row = {"bytes": nbytes, "ranks": comm.size}
        # (the lambdas below run inside this iteration: binding send/recv late is intended)
        if peer < comm.size:
            row["pingpong_s"] = _timed(comm, lambda: _pingpong(comm, peer, send, recv), reps) / 2  # noqa: B023
            row["exchange_s"] = _timed(comm, lambda: comm.exchange(peer, send, recv), reps)  # noqa: B023
        else:  # an odd rank count: the last rank has no partner
            _timed(comm, lambda: None, reps)
            _timed(comm, lambda: None, reps)
        row["allreduce_s"] = _timed(comm, lambda: comm.allreduce_sum_(send), reps)  # noqa: B023
        rows.append(row)
    return rows


def _pingpong(comm: Communicator, peer: int, send: torch.Tensor, recv: torch.Tensor) -> None:
    if comm.rank < peer:
        comm.send(send, peer)
        comm.recv(recv, peer)
    else:
        comm.recv(recv, peer)
        comm.send(send, peer)


def fit_alpha_beta(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """t = α + M·β from the ping-pong times: β is the least-squares slope over the larger half of
    the sizes (bandwidth-bound), α the smallest message's time less its M·β (latency-bound)."""
    points = sorted((r["bytes"], r["pingpong_s"]) for r in rows if "pingpong_s" in r)
    large = np.array(points[len(points) // 2:], float)
    beta = float(np.polyfit(large[:, 0], large[:, 1], 1)[0]) if len(large) > 1 else points[-1][1] / points[-1][0]
    beta = max(beta, 1e-15)
    alpha = max(points[0][1] - points[0][0] * beta, 0.0)
    return alpha, beta


def annotate(rows: list[dict[str, Any]], backend: str, alpha: float, beta: float) -> list[dict[str, Any]]:
    """Add the model's predictions, bandwidths and efficiencies to measured rows."""
    cost, out = CostModel(alpha, beta), []   # the simulator's α–β model
    for r in rows:
        n, m = r["ranks"], r["bytes"]
        predicted = cost.seconds(CommEvent("allreduce", m, n, True))
        point_to_point = cost.seconds(CommEvent("pairwise", m, 2, True))
        algbw = m / r["allreduce_s"]
        busbw = algbw * 2 * (n - 1) / n
        out.append({**r, "experiment": "E6", "backend": backend, "alpha_s": alpha, "beta_s_per_byte": beta,
                    "pingpong_model_s": point_to_point, "exchange_model_s": point_to_point,
                    "allreduce_model_s": predicted, "allreduce_over_model": r["allreduce_s"] / predicted,
                    "algbw_bytes_per_s": algbw, "busbw_bytes_per_s": busbw, "busbw_over_link": busbw * beta})
    return out


def thread_rows(n: int, sizes: list[int]) -> list[dict[str, Any]]:
    return InProcessGroup(n, timeout_s=120.0).run(lambda comm: measure(comm, sizes), join_timeout_s=600.0)[0]


def mpi_rows(n: int, sizes: list[int], timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """`mpiexec -n n` running this module; [] (with a note) when no MPI launcher is available."""
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if launcher is None:
        print("E6: no mpiexec found, skipping the MPI communicator", file=sys.stderr)
        return []
    command = [launcher, "-n", str(n), sys.executable, "-m", "kaldi_avg.experiments.commbench",
               "--largest", str(max(sizes))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    if result.returncode != 0:
        print(f"E6: mpiexec failed (exit {result.returncode}): {result.stderr[-500:]}", file=sys.stderr)
        return []
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_e6(quick: bool, log=print) -> list[dict[str, Any]]:
    """Threads with N = 2 and 4 (α, β fitted on the N = 2 ping-pong: one link), then MPI with N = 2."""
    torch.set_num_threads(1)
    sizes = message_sizes(16 * 2**20 if quick else 256 * 2**20)
    rows: list[dict[str, Any]] = []
    link: tuple[float, float] | None = None
    for backend, n in (("threads", 2), ("threads", 4), ("mpi", 2)):
        t0 = time.perf_counter()
        measured = thread_rows(n, sizes) if backend == "threads" else mpi_rows(n, sizes)
        if not measured:
            continue
        if backend == "mpi" or link is None:
            link = fit_alpha_beta(measured)
        rows += annotate(measured, backend, *link)
        log(f"  E6 {backend} N={n}: alpha {link[0] * 1e6:.1f} us, 1/beta {1 / link[1] / 1e9:.2f} GB/s "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows


def _mpi_main() -> None:
    parser = argparse.ArgumentParser(description="E6 measurement under mpiexec (prints JSON rows on rank 0)")
    parser.add_argument("--largest", type=int, default=16 * 2**20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    comm = make_communicator("mpi")
    rows = measure(comm, message_sizes(args.largest))
    if comm.rank == 0:
        print(json.dumps(rows))


if __name__ == "__main__":
    _mpi_main()
