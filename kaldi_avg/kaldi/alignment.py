"""Alignment directories: `ali.{1..N}.gz` transition-ids -> per-frame pdf-ids (ali-to-pdf).

docs/kaldi-formats.md 2.4, 8.4. The gzip streams are opened in Python (no `gunzip` process).
"""
from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .binary import KaldiFormatError
from .tables import read_int_vector_stream
from .transition import TransitionModel, read_transition_model


def alignment_archives(ali_dir: str) -> list[str]:
    """`ali.1.gz .. ali.N.gz` for N in `<ali_dir>/num_jobs`; a missing one is an error."""
    nj_path = os.path.join(ali_dir, "num_jobs")
    try:
        with open(nj_path) as f:
            text = f.read().strip()
    except OSError as e:
        raise KaldiFormatError(f"{nj_path}: cannot read the number of alignment jobs: {e}") from None
    if not text.isdigit() or int(text) < 1:
        raise KaldiFormatError(f"{nj_path}: expected a positive integer, got {text!r}")
    paths = [os.path.join(ali_dir, f"ali.{j}.gz") for j in range(1, int(text) + 1)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise KaldiFormatError(f"{missing[0]}: missing ({len(missing)} of the {len(paths)} "
                               f"archives that {nj_path} announces are missing)")
    return paths


def read_transition_ids(path: str) -> dict[str, np.ndarray]:
    """Transition-id sequences of one gzip'ed int32-vector archive."""
    out: dict[str, np.ndarray] = {}
    try:
        with gzip.open(path, "rb") as f:
            for key, tids in read_int_vector_stream(f, path):
                if key in out:
                    raise KaldiFormatError(f"{path}: utterance {key!r} appears twice")
                out[key] = tids
    except zlib.error as e:  # corrupt compressed data (cut-off streams raise EOFError inside)
        last = f" (last complete entry {next(reversed(out))!r})" if out else ""
        raise KaldiFormatError(f"{path}: unreadable gzip stream{last}: {e}") from None
    return out


def read_alignments(ali_dir: str, trans_model: TransitionModel | None = None) -> dict[str, np.ndarray]:
    """Per-frame pdf-ids (int32) of every utterance in all of `ali_dir`'s archives.

    The transition model defaults to `<ali_dir>/final.mdl` (its prefix). Utterances in two
    archives, and transition-ids outside the model, are errors naming archive and utterance.
    """
    if trans_model is None:
        trans_model = read_transition_model(os.path.join(ali_dir, "final.mdl"))
    pdfs: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for path in alignment_archives(ali_dir):
        for utt, tids in read_transition_ids(path).items():
            if utt in pdfs:
                raise KaldiFormatError(f"{path}: utterance {utt!r} is also in {source[utt]}")
            pdfs[utt] = trans_model.tids_to_pdfs(tids, what=f"{path}: utterance {utt!r}")
            source[utt] = path
    return pdfs


MAX_EXAMPLES = 5
# nnet3-get-egs --targets-length-tolerance (default 2; steps/nnet3/get_egs.sh does not set it):
# src/nnet3bin/nnet3-get-egs.cc, UtteranceSplitter::LengthsMatch in src/nnet3/nnet-example-utils.cc.
TARGETS_LENGTH_TOLERANCE = 2


class SkipSink(Protocol):
    """Where dropped utterances are recorded: `kaldi_avg.data.SkipReport` (reasons
    `missing_targets`, `target_length_mismatch`)."""

    def add(self, reason: str, key: str, frames: int = 0) -> object: ...


@dataclass
class AlignmentMatchReport:
    """What `match_alignments` kept and dropped; add reports of several ranks with `+`."""
    num_matched: int = 0
    num_no_alignment: int = 0
    num_length_mismatch: int = 0
    num_unused_alignments: int = 0  # alignments for utterances that are not in the data
    no_alignment_examples: list[str] = field(default_factory=list)
    length_mismatch_examples: list[str] = field(default_factory=list)  # "utt (feats F, ali A)"
    num_length_tolerated: int = 0  # kept although their length differs (within the tolerance)

    def __add__(self, other: AlignmentMatchReport) -> AlignmentMatchReport:
        return AlignmentMatchReport(
            self.num_matched + other.num_matched,
            self.num_no_alignment + other.num_no_alignment,
            self.num_length_mismatch + other.num_length_mismatch,
            self.num_unused_alignments + other.num_unused_alignments,
            (self.no_alignment_examples + other.no_alignment_examples)[:MAX_EXAMPLES],
            (self.length_mismatch_examples + other.length_mismatch_examples)[:MAX_EXAMPLES],
            self.num_length_tolerated + other.num_length_tolerated)

    @classmethod
    def merge(cls, reports: Iterable[AlignmentMatchReport]) -> AlignmentMatchReport:
        return sum(reports, cls())

    @property
    def num_dropped(self) -> int:
        return self.num_no_alignment + self.num_length_mismatch

    def summary(self) -> str:
        parts = [f"{self.num_matched} utterances with alignments"]
        if self.num_length_tolerated:
            parts.append(f"{self.num_length_tolerated} of them within the length tolerance")
        if self.num_no_alignment:
            parts.append(f"{self.num_no_alignment} skipped without alignment "
                         f"(e.g. {', '.join(self.no_alignment_examples)})")
        if self.num_length_mismatch:
            parts.append(f"{self.num_length_mismatch} skipped for a length mismatch "
                         f"(e.g. {', '.join(self.length_mismatch_examples)})")
        if self.num_unused_alignments:
            parts.append(f"{self.num_unused_alignments} alignments for utterances not in the data")
        return "; ".join(parts)


def match_alignments(num_frames_by_utt: Mapping[str, int], pdfs_by_utt: Mapping[str, np.ndarray],
                     skipped: SkipSink | None = None,
                     length_tolerance: int = TARGETS_LENGTH_TOLERANCE, length=len, frame_subsampling_factor: int = 1
                     ) -> tuple[dict[str, np.ndarray], AlignmentMatchReport]:
    """Keeps the utterances whose alignment length is within `length_tolerance` frames of
    their frame count, as nnet3-get-egs does (a shorter alignment leaves the last frames
    unlabelled, weight 0; a longer one's extra labels are never used). With a frame-subsampling
    factor f (chain supervisions, `length` their frame count) the count is ceil(frames / f), as
    nnet3-chain-get-egs checks it.

    Returns `{utt: pdfs}` (unchanged, in the order of `num_frames_by_utt`) and a report of
    the counts; each dropped utterance is also recorded in `skipped` with its frame count,
    under `missing_targets` or `target_length_mismatch`.
    """
    matched: dict[str, np.ndarray] = {}
    report = AlignmentMatchReport()
    for utt, frames in num_frames_by_utt.items():
        pdfs = pdfs_by_utt.get(utt)
        if pdfs is None:
            report.num_no_alignment += 1
            if len(report.no_alignment_examples) < MAX_EXAMPLES:
                report.no_alignment_examples.append(utt)
            if skipped is not None:
                skipped.add("missing_targets", utt, frames)
        elif abs(length(pdfs) - -(-frames // frame_subsampling_factor)) > length_tolerance:
            report.num_length_mismatch += 1
            if len(report.length_mismatch_examples) < MAX_EXAMPLES:
                report.length_mismatch_examples.append(f"{utt} (feats {frames}, ali {length(pdfs)})")
            if skipped is not None:
                skipped.add("target_length_mismatch", utt, frames)
        else:
            report.num_length_tolerated += length(pdfs) != -(-frames // frame_subsampling_factor)
            matched[utt] = pdfs
    report.num_matched = len(matched)
    report.num_unused_alignments = sum(1 for utt in pdfs_by_utt if utt not in num_frames_by_utt)
    return matched, report


def pdf_counts(pdfs_by_utt: Mapping[str, np.ndarray], num_pdfs: int) -> np.ndarray:
    """How many frames are aligned to each pdf (int64, length `num_pdfs`)."""
    counts = np.zeros(num_pdfs, dtype=np.int64)
    for utt, pdfs in pdfs_by_utt.items():
        pdfs = np.asarray(pdfs)
        bad = pdfs[(pdfs < 0) | (pdfs >= num_pdfs)]
        if bad.size:
            raise ValueError(f"utterance {utt!r}: pdf-id {int(bad[0])} outside 0..{num_pdfs - 1}")
        counts += np.bincount(pdfs, minlength=num_pdfs)
    return counts
