"""The real multi-rank code paths (collectives, communication threads, the server) on 4 in-process
ranks: the same checks the MPI test runs on 2 processes."""
from __future__ import annotations

import pytest

from kaldi_avg.parallel import run_ranks

from .mpi_checks import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_on_four_in_process_ranks(check):
    run_ranks(4, check, timeout_s=30)
