"""A parameter server on rank 0 for ASGD and asynchronous EASGD (Li et al.'s AsgdServer/EasgdServer).

The server's state and update rule belong to the algorithm; this module moves requests. Replicas
living in rank 0's process call `serve()` directly under the server lock; other ranks send a request
to a service thread on rank 0, which receives from any rank in arrival order (tagged messages on a
dup'd channel, so nothing mixes with the main thread's collectives) and replies. Rank 0 thus trains
like every other rank while hosting the server; report the server's rank as a worker too.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .comm import Communicator

if TYPE_CHECKING:
    from .base import Algorithm

_TAG_HEADER, _TAG_PAYLOAD, _TAG_REPLY = 21, 22, 23
_REQUEST, _STOP = 1, 2

#: rule(worker, payload) -> reply; runs under the server lock
ServerRule = Callable[[int, torch.Tensor], torch.Tensor]


class ParameterServer:
    """Built collectively on every rank; `rule` is only used on rank 0."""

    def __init__(self, comm: Communicator, rule: ServerRule, numel: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.comm = comm.dup() if comm.size > 1 else comm
        self.rule = rule
        self.lock = threading.Lock()
        self.hosts_server = comm.rank == 0
        self._numel, self._dtype, self._device = numel, dtype, device
        self._thread: threading.Thread | None = None
        if self.hosts_server and comm.size > 1:
            self._thread = threading.Thread(target=self._serve_remote, daemon=True, name="kaldi-avg-server")
            self._thread.start()

    def request(self, worker: int, payload: torch.Tensor) -> torch.Tensor:
        """Apply the rule for `worker` and return the reply, locally or through rank 0."""
        if self.hosts_server:
            with self.lock:
                return self.rule(worker, payload)
        reply = torch.empty(self._numel, dtype=self._dtype, device=self._device)
        self.comm.send(torch.tensor([_REQUEST, worker]), 0, _TAG_HEADER)
        self.comm.send(payload, 0, _TAG_PAYLOAD)
        self.comm.recv(reply, 0, _TAG_REPLY)
        return reply

    def close(self) -> None:
        """Collective: clients say goodbye; rank 0 waits until every client has."""
        if self.comm.size == 1:
            return
        if self.hosts_server:
            assert self._thread is not None
            self._thread.join()
        else:
            self.comm.send(torch.tensor([_STOP, -1]), 0, _TAG_HEADER)

    def _serve_remote(self) -> None:
        header = torch.zeros(2, dtype=torch.int64)
        payload = torch.empty(self._numel, dtype=self._dtype, device=self._device)
        clients = self.comm.size - 1
        while clients:
            source = self.comm.recv(header, None, _TAG_HEADER)
            if int(header[0]) == _STOP:
                clients -= 1
                continue
            self.comm.recv(payload, source, _TAG_PAYLOAD)
            with self.lock:
                reply = self.rule(int(header[1]), payload)
            self.comm.send(reply, source, _TAG_REPLY)


def finish_with_server(algorithm: Algorithm, server: ParameterServer, model: torch.Tensor,
                       exchange: Callable[[int], None]) -> None:
    """Collective end of a run with a parameter server: every local worker exchanges what it learned
    since its last exchange, the server closes, and every replica receives rank 0's `model`."""
    from .base import CommEvent
    for k, clock in enumerate(algorithm.worker_clocks):
        if clock.frames > 0:
            exchange(k)
    server.close()
    if algorithm.comm.size > 1:
        algorithm.comm.broadcast_(model, 0)
        algorithm.log.record(CommEvent("broadcast", algorithm.model_bytes, algorithm.n_workers, True))
    algorithm.set_all_(model)
