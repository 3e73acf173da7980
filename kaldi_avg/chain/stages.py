"""chain/train.py's own stages, which the shared driver (kaldi_avg/train/driver.py) runs in
Kaldi's order (docs/chain.md 9.2):

  -6  phone_lm.fst from the tree dir's alignments (`--chain.lm-opts`), rank 0
  -5  den.fst, normalization.fst (and the tree, 0.trans_mdl, phones.txt copied in), rank 0
  -3  supervision.N.ark: each utterance's supervision from --lat-dir's lattices (what get_egs.sh's
      chain-get-supervision makes before it cuts egs), the lattice archives shared by the ranks

A stage also runs whenever its output is missing, so a --stage past it reuses what is there.
The rest (LDA, 0.mdl, iterations, combination) is the shared driver's, with the chain objective
(`chain_objective`) and the supervisions as the corpus's labels (`chain_corpus`).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

from ..atomic import copy_file, write_bytes, write_text
from ..data.checks import OnlineIvectors
from ..data.corpus import build_source
from ..data.report import SkipReport
from ..data.source import UtteranceSource
from ..kaldi.binary import BINARY_HEADER
from ..kaldi.transition import TransitionModel
from ..parallel import Communicator
from ..train.config import RunConfig
from ..train.expdir import ExpDir
from .den_graph import read_fst
from .denominator import DenominatorGraph
from .egs import ChainLabels, read_supervision_archives
from .prepare import (
    PrepareError,
    PrepareOptions,
    PrepareSummary,
    parse_lm_opts,
    stage_den_fst,
    stage_phone_lm,
    stage_supervision,
)
from .topology import read_chain_tree_dir
from .training import ChainTraining


def check_tree_dir(config: RunConfig) -> None:
    """The tree and final.mdl of --tree-dir: the chain topology, the tree's pdfs (one line)."""
    read_chain_tree_dir(config.ali_dir, read_alignments=False)


def make_chain_files(config: RunConfig, trans_model: TransitionModel, comm: Communicator,
                     say: Callable[[str], None]) -> None:
    """Stages -6, -5 and -3 (module docstring); ends with every rank able to read their files."""
    exp, c = ExpDir(config.dir), config.chain
    summary = PrepareSummary()
    if comm.rank == 0:
        for name in ("tree", "phones.txt"):
            src = os.path.join(config.ali_dir, name)
            if os.path.exists(src):
                copy_file(src, exp.copied(src))
        write_bytes(exp.trans_model, BINARY_HEADER + trans_model.to_bytes(True))   # copy-transition-model
        opts = PrepareOptions(lm_opts=parse_lm_opts(c.lm_opts), lm_opts_text=c.lm_opts)
        if config.stage <= -6 or not os.path.exists(exp.phone_lm):
            stage_phone_lm(config.ali_dir, opts, summary, out_dir=config.dir)
            say(f"stage -6: {exp.phone_lm}, {summary.phone_lm_states} states")
        if config.stage <= -5 or not (os.path.exists(exp.den_fst) and os.path.exists(exp.normalization_fst)):
            stage_den_fst(config.dir, summary)
            say(f"stage -5: {exp.den_fst} ({summary.den_states} states, {summary.den_arcs} arcs), "
                f"{exp.normalization_fst}")
    comm.barrier()
    if config.stage <= -3 or not os.path.exists(exp.num_supervision_jobs):
        opts = PrepareOptions(frame_subsampling_factor=c.alignment_subsampling_factor, left_tolerance=c.left_tolerance,
                              right_tolerance=c.right_tolerance, lat_dir=config.lat_dir)
        stage_supervision(config.ali_dir, config.feat_dir, config.dir, opts, summary, comm.rank, comm.size)
        counts = comm.allgather_object((summary.supervisions, summary.supervision_failed, summary.length_mismatch,
                                        len(summary.supervision_archives), summary.first_failure))
        made, failed, length, archives = (sum(x) for x in list(zip(*counts))[:4])
        first = next((c[4] for c in counts if c[4]), "")
        if not made:
            raise PrepareError(f"no supervision for the utterances of {config.feat_dir} from the lattices of "
                               f"{config.lat_dir}" + (f"; the first failure: {first}" if first else ""))
        if comm.rank == 0:
            write_text(exp.num_supervision_jobs, f"{archives}\n")
            say(f"stage -3: {made} supervisions from {config.lat_dir}'s lattices in {archives} archive(s); "
                f"{failed} failed, {length} of the wrong length (log/get_supervision.*.log)"
                + (f"; the first failure: {first}" if first else ""))
        comm.barrier()


def supervision_paths(exp: ExpDir) -> list[str]:
    with open(exp.num_supervision_jobs) as f:
        count = int(f.read().strip())
    return [exp.path(f"supervision.{j}.ark") for j in range(1, count + 1)]


def chain_corpus(config: RunConfig, trans_model: TransitionModel, report: SkipReport,
                 ivectors: OnlineIvectors | None) -> tuple[UtteranceSource, str]:
    """The corpus with the supervisions of stage -3 as its labels (kaldi_avg/chain/egs.py)."""
    exp = ExpDir(config.dir)
    labels = ChainLabels(read_fst(exp.normalization_fst, "normalization FST"), config.chain.frame_subsampling_factor)
    return build_source(config.feat_dir, trans_model, report, cmvn_opts=config.cmvn_opts,
                        alignments=read_supervision_archives(supervision_paths(exp)), ivectors=ivectors, labels=labels)


class TorchCoin:
    """The out-of-range penalty's coin (Kaldi's RandInt(0, 1)) from torch's generator, which every
    job seeds: a resumed run draws the same coins."""

    @staticmethod
    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, ()))


def chain_objective(config: RunConfig, num_pdfs: int) -> ChainTraining:
    return ChainTraining(DenominatorGraph.from_fst(ExpDir(config.dir).den_fst, num_pdfs), config.chain.training,
                         rng=TorchCoin())


__all__ = ["TorchCoin", "chain_corpus", "chain_objective", "check_tree_dir", "make_chain_files", "supervision_paths"]
