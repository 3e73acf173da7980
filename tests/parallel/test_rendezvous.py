"""The ranks of a Kaldi array job meet through a rendezvous file (torch_backend.from_rendezvous_file):
the launcher's half holds a per-run secret and the address to bind (mode 0600); rank 0 serves the store
on that address only; every key lives below the secret, so a process without it can neither read the
run's keys nor join it (an impostor waits, bounded, and is told who never joined)."""
from __future__ import annotations

import datetime
import os
import threading

import pytest
import torch
import torch.distributed as dist

from kaldi_avg.parallel.torch_backend import (
    RendezvousError,
    TorchDistCommunicator,
    new_rendezvous,
    read_rendezvous,
    write_rendezvous,
)


def run_ranks(path, ranks, size=2):
    results, threads = {}, []

    def rank(r):
        try:
            comm = TorchDistCommunicator.from_rendezvous_file(path, r, size, backend="gloo", timeout_s=60)
            t = torch.ones(2) * (r + 1)
            comm.allreduce_sum_(t)
            results[r], results[f"comm{r}"] = t, comm   # kept: rank 0's serves the store
        except Exception as e:   # the test reads it
            results[r] = e

    for r in ranks:
        threads.append(threading.Thread(target=rank, args=(r,), daemon=True))
        threads[-1].start()
    return results, threads


def test_the_rendezvous_file_is_the_owners_and_the_store_listens_on_loopback(tmp_path):
    path = str(tmp_path / ".rendezvous.x")
    new_rendezvous(path, local=True)
    assert os.stat(path).st_mode & 0o777 == 0o600
    results, threads = run_ranks(path, (0, 1))
    for t in threads:
        t.join(60)
    assert [results[r].tolist() for r in (0, 1)] == [[3.0, 3.0]] * 2
    fields = read_rendezvous(path)
    assert os.stat(path).st_mode & 0o777 == 0o600 and fields["address"].startswith("127.0.0.1 ")
    host, port = fields["address"].split()
    outsider = dist.TCPStore(host, int(port), is_master=False, wait_for_workers=False,
                             timeout=datetime.timedelta(seconds=10))
    assert not outsider.check(["kaldi_avg/joined"])   # nothing readable without the secret ...
    assert dist.PrefixStore(f"kaldi_avg/{fields['secret']}/", outsider).check(["kaldi_avg/joined"])   # ... with it


def test_a_rank_without_the_secret_cannot_join(tmp_path, monkeypatch):
    monkeypatch.setenv("KALDI_AVG_RENDEZVOUS_TIMEOUT", "8")
    path = str(tmp_path / ".rendezvous.x")
    new_rendezvous(path, local=True)
    results, threads = run_ranks(path, (0,))
    while "address" not in read_rendezvous(path):
        threading.Event().wait(0.05)
    forged = str(tmp_path / ".rendezvous.forged")   # the address, and a guessed secret
    write_rendezvous(forged, {**read_rendezvous(path), "secret": "0" * 32})
    impostor, impostor_threads = run_ranks(forged, (1,))   # first in, as rank 1
    real, real_threads = run_ranks(path, (1,))
    for t in threads + real_threads + impostor_threads:
        t.join(60)
    assert results[0].tolist() == real[1].tolist() == [3.0, 3.0]   # the run formed without it
    assert isinstance(impostor[1], RendezvousError) and "rank(s) 0 of 2 did not join" in str(impostor[1])


def test_a_bad_timeout_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KALDI_AVG_RENDEZVOUS_TIMEOUT", "soon")
    with pytest.raises(RendezvousError, match="KALDI_AVG_RENDEZVOUS_TIMEOUT='soon': expected a number of seconds"):
        TorchDistCommunicator.from_rendezvous_file(str(tmp_path / "r"), 1, 2)
