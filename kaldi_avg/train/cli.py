"""`kaldi-avg train` / `python -m kaldi_avg.train.cli`: one persistent rank of a training run.

Under mpiexec every rank runs `main`; a rank that raises logs the error with its rank number
and aborts the whole MPI job (non-zero exit on all ranks).
"""
from __future__ import annotations

import sys
import traceback

from .driver import get_parser, run
from .parallel import Comm, launched_by_mpi


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    comm = Comm(use_mpi=launched_by_mpi())
    try:
        return run(comm.rank, comm.world_size, args, comm)
    except SystemExit as e:
        if comm.world_size > 1 and e.code not in (0, None):
            print(f"[rank {comm.rank}] ERROR: {e.code}", file=sys.stderr, flush=True)
            comm.abort(1)
        raise
    except BaseException as e:  # noqa: BLE001 - every failure must end all ranks
        print(f"[rank {comm.rank}] ERROR: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        if comm.world_size > 1:
            comm.abort(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
