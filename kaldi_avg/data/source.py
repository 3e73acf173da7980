"""The corpus as the pipeline sees it: lengths, a feature loader, targets (pdf ids, or chain
supervisions: `labels`, kaldi_avg/data/labels.py), i-vectors.

The caller builds the loaders from Kaldi tables (features after CMVN); this module only checks
what comes back.  Checks that need no feature I/O run once, up front (`screen_utterances`);
the rest run when an utterance is loaded (`load_utterance`).  Tolerances follow
`nnet3-get-egs`: targets may differ from the feature length (after frame subsampling) by the
labels' `length_tolerance` frames (missing frames get weight 0), i-vector rows x period by
`ivector_length_tolerance`.
Features that cannot be read (a corrupt archive entry that the start-up header check of
`kaldi_avg.data.checks` could not see) are skipped as `unreadable`, with a warning naming the
entry.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..kaldi.binary import KaldiFormatError
from .chunking import ChunkConfig
from .labels import PDF_LABELS, Labels
from .report import DataError, SkipReport

log = logging.getLogger(__name__)


IVECTOR_LENGTH_TOLERANCE = 100   # frames: nnet3-get-egs's --length-tolerance, which get_egs.sh leaves


@dataclass(frozen=True)
class UtteranceSource:
    """`load_features(utt) -> (T, feat_dim) float32`, `targets[utt]` -> what `labels` reads ((T,)
    pdf ids by default), optional `load_ivector(utt) -> (rows, ivector_dim)` with one row per `ivector_period`
    frames.  The loaders raise KeyError for an unknown utterance, KaldiFormatError for an
    unreadable one."""

    lengths: Mapping[str, int]
    load_features: Callable[[str], np.ndarray]
    targets: Mapping[str, np.ndarray]
    feat_dim: int
    load_ivector: Callable[[str], np.ndarray] | None = None
    ivector_dim: int = 0
    ivector_period: int = 1
    num_pdfs: int | None = None
    labels: Labels = PDF_LABELS
    ivector_length_tolerance: int = IVECTOR_LENGTH_TOLERANCE

    def __post_init__(self):
        if (self.load_ivector is None) != (self.ivector_dim == 0):
            raise ValueError("give load_ivector and ivector_dim > 0 together")
        if self.ivector_period <= 0:
            raise ValueError(f"ivector_period must be positive, got {self.ivector_period}")


@dataclass(frozen=True)
class LoadedUtterance:
    features: np.ndarray          # (T, feat_dim) float32
    targets: object               # what `labels.check` returns: (T', ) int64 pdf ids, |T' - T| <= tolerance
    ivectors: np.ndarray | None   # (rows, ivector_dim) float32


def screen_utterances(source: UtteranceSource, config: ChunkConfig,
                      utts: Iterable[str] | None = None,
                      report: SkipReport | None = None) -> dict[str, int]:
    """The usable utterances (with lengths) among `utts` (default: all), recording the rest
    in `report`: too short for any chunk, no targets, or targets of the wrong length."""
    report = report if report is not None else SkipReport()
    labels = source.labels
    f = labels.frame_subsampling_factor
    usable = {}
    for utt in (utts if utts is not None else source.lengths):
        num_frames = int(source.lengths[utt])
        targets = source.targets.get(utt)
        expected = (num_frames + f - 1) // f
        if num_frames < config.min_width:
            report.add("too_short", utt, num_frames)
        elif targets is None:
            report.add("missing_targets", utt, num_frames)
        elif abs(labels.length(targets) - expected) > labels.length_tolerance:
            report.add("target_length_mismatch", utt, num_frames)
        else:
            if labels.length(targets) < expected:
                report.add("targets_padded", utt, expected - labels.length(targets))
            usable[utt] = num_frames
    return usable


def load_utterance(source: UtteranceSource, utt: str,
                   report: SkipReport) -> LoadedUtterance | None:
    """Features, targets and i-vectors of a screened utterance, or None (recorded in
    `report`) if its data is unusable.  Raises DataError where the inputs disagree with each
    other (frame count, dimensions, pdf range)."""
    expected = int(source.lengths[utt])
    try:
        features = np.asarray(source.load_features(utt), dtype=np.float32)
    except KeyError:
        raise DataError(utt, "the feature loader does not know it") from None
    except KaldiFormatError as e:
        if report.add("unreadable", utt, expected):
            log.warning("skipping utterance %r: %s", utt, e)
        return None
    if features.ndim != 2 or features.shape[0] != expected:
        raise DataError(utt, f"features have shape {features.shape}, but the utterance list "
                             f"says {expected} frames")
    if features.shape[1] != source.feat_dim:
        raise DataError(utt, f"feature dimension {features.shape[1]}, expected {source.feat_dim}")
    if not np.isfinite(features).all():
        report.add("non_finite_features", utt, expected)
        return None
    targets = source.labels.check(utt, source.targets[utt], source.num_pdfs)
    ivectors = None
    if source.load_ivector is not None:
        ivectors = _load_ivectors(source, utt, expected, report)
        if ivectors is None:
            return None
    return LoadedUtterance(features, targets, ivectors)


def _load_ivectors(source: UtteranceSource, utt: str, num_frames: int,
                   report: SkipReport) -> np.ndarray | None:
    try:
        ivectors = np.asarray(source.load_ivector(utt), dtype=np.float32)
    except KeyError:
        report.add("missing_ivector", utt, num_frames)
        return None
    if ivectors.ndim != 2 or (ivectors.shape[0] and ivectors.shape[1] != source.ivector_dim):
        raise DataError(utt, f"i-vectors have shape {ivectors.shape}, expected "
                             f"(rows, {source.ivector_dim})")
    covered = ivectors.shape[0] * source.ivector_period
    if ivectors.shape[0] == 0 or abs(num_frames - covered) > source.ivector_length_tolerance:
        report.add("ivector_length_mismatch", utt, num_frames)
        return None
    if not np.isfinite(ivectors).all():
        report.add("non_finite_ivector", utt, num_frames)
        return None
    return ivectors
