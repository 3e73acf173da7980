"""The training corpus of a Kaldi data directory and alignment directory, as the jobs read it
(docs/kaldi-formats.md 6.11, 8.3): CMVN-applied features, pdf targets (or chain supervisions,
docs/chain.md 9.3), online i-vectors."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..kaldi.alignment import match_alignments, read_alignments
from ..kaldi.cmvn import CmvnApplier
from ..kaldi.datadir import DataDir
from ..kaldi.tables import MatrixTable
from ..kaldi.transition import TransitionModel
from .checks import InputError, OnlineIvectors
from .labels import PDF_LABELS, Labels
from .report import SkipReport
from .source import UtteranceSource


def build_source(feat_dir: str, trans_model: TransitionModel, report: SkipReport, *, cmvn_opts: str = "",
                 ali_dir: str | None = None, alignments: Mapping[str, np.ndarray] | None = None,
                 ivectors: OnlineIvectors | None = None, labels: Labels = PDF_LABELS) -> tuple[UtteranceSource, str]:
    """The corpus and a one-line summary of the alignment match; utterances without a usable
    alignment are recorded in `report`. `alignments`: the pdfs by utterance (the run's shared
    PdfStore; chain: the supervisions, with their `labels`), else read from `ali_dir`. The
    targets stay that mapping: a memory-mapped store is not copied per utterance."""
    data = DataDir(feat_dir)
    feats = data.feats
    if feats is None:
        raise InputError(f"{feat_dir}/feats.scp is missing")
    cmvn = CmvnApplier(data, cmvn_opts)
    lengths = {utt: data.num_frames(utt) for utt in feats}
    if alignments is None:
        alignments = read_alignments(ali_dir, trans_model)
    matched, summary = match_alignments(lengths, alignments, skipped=report, length_tolerance=labels.length_tolerance,
                                        length=labels.length, frame_subsampling_factor=labels.frame_subsampling_factor)
    ivec = {}
    if ivectors is not None:
        table = MatrixTable(ivectors.scp)
        ivec = dict(load_ivector=table.__getitem__, ivector_dim=table.shape(next(iter(table)))[1],
                    ivector_period=ivectors.period)
    feat_dim = feats.shape(next(iter(feats)))[1]
    source = UtteranceSource(lengths={u: lengths[u] for u in matched}, load_features=lambda u: cmvn(u, feats[u]),
                             targets=alignments, feat_dim=feat_dim, num_pdfs=trans_model.num_pdfs, labels=labels,
                             **ivec)
    return source, summary.summary()
