"""Start-up checks of the training inputs, run once on rank 0 before anything is trained.

Each check is cheap (no feature matrix is decoded) and raises `InputError`, a one-line message
naming the file and the utterance, so that a truncated archive, a wrong feature dimension or a
tree from another system stops the run at once instead of hours later.

* scp entries (docs/kaldi-formats.md 1.5, 1.6, 1.8): the archive opens, the offset lies in it,
  the object there is a binary matrix (`FM`, `DM`, `CM`, `CM2`, `CM3`) whose data fits in the
  file, and its dimension is the expected one.  Row/column ranges (`ark:off[a:b]`) are checked
  against the header.  Pipes (`cmd |`, `-`) are not run (that would compute every feature);
  text-mode entries are not parsed; both are counted in the result as not checked.
* utt2num_frames (8.1), when the data directory has one: every feats.scp entry's rows, from the
  same header, equal its line (a stale file would drop good utterances as alignment mismatches).
* alignments (2.4, 8.4): every transition-id within the transition model; the `tree` parses
  and has the transition model's number of pdfs (2.5, 2.6).
* minibatches (6.1): every archive holds at least one full minibatch of chunks.
* online i-vectors (6.11): `ivector_period` is a positive integer; every utterance of feats.scp has
  an `ivector_online.scp` entry of the network's i-vector dim whose rows x period cover its frames
  within nnet3-get-egs's tolerance (a wrong period shows on the first utterance).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import UsageError
from ..kaldi.binary import KaldiFormatError
from ..kaldi.tables import ArchiveFiles, is_pipe, read_script
from ..kaldi.transition import TransitionModel
from ..kaldi.tree import read_tree_num_pdfs
from .merging import MinibatchSizeRule
from .pdf_store import PdfStore, ensure_pdf_store
from .source import IVECTOR_LENGTH_TOLERANCE


class InputError(UsageError):
    """Training input that fails a start-up check; the message names the file and the key."""


@dataclass(frozen=True)
class ScpCheck:
    """What `check_matrix_scp` looked at: entries whose header was checked, and the rest."""
    path: str
    num_checked: int
    num_pipes: int = 0   # `cmd |` or `-`: not run
    num_text: int = 0    # text-mode objects: not parsed
    cols: int | None = None  # the columns of every checked entry

    def summary(self) -> str:
        skipped = [f"{n} {what} not checked" for n, what in ((self.num_pipes, "pipe entries"),
                                                              (self.num_text, "text entries")) if n]
        return f"{self.path}: {self.num_checked} entries checked" + "".join(f", {s}" for s in skipped)


def check_matrix_scp(scp_path: str, expected_cols: int | None = None, what: str = "utterance",
                     expected_by: str = "the network's input", rank: int = 0, world_size: int = 1,
                     num_frames: NumFrames | None = None) -> ScpCheck:
    """Checks every entry of a matrix scp (feats.scp, cmvn.scp) by its header alone; of `world_size`
    ranks checking it together, rank r takes the entries r, r + world_size, ...; with `num_frames`
    (utt2num_frames), each entry's rows against its line (`NumFrames.check`).

    Raises InputError for an empty or malformed scp, an entry that cannot be opened or is
    truncated, or (when `expected_cols` is given) a column count other than `expected_cols`:
    "data/train/feats.scp: utterance X has dim 65, the network's input expects 40".  Without
    `expected_cols`, all checked entries must agree with the first.
    """
    try:
        entries = read_script(scp_path)
    except KaldiFormatError as e:
        raise InputError(str(e)) from None
    if not entries:
        raise InputError(f"{scp_path} is empty")
    counts = {"checked": 0, "pipes": 0, "text": 0}
    with ArchiveFiles() as archives:
        for key, rx in entries[rank::world_size]:
            shape = _checked_shape(archives, scp_path, what, key, rx, counts)
            if shape is None:
                continue
            if num_frames is not None:
                num_frames.check(key, shape[0])
            if expected_cols is None:
                expected_cols = shape[1]
                expected_by = f"{what} {key}"
            if shape[1] != expected_cols:
                raise InputError(f"{scp_path}: {what} {key} has dim {shape[1]}, "
                                 f"{expected_by} expects {expected_cols}")
    return ScpCheck(scp_path, counts["checked"], counts["pipes"], counts["text"],
                    expected_cols if counts["checked"] else None)


@dataclass(frozen=True)
class NumFrames:
    """A data directory's utt2num_frames (its path and lines), checked against feats.scp.

    A stale one (features extracted again, feats.scp copied from elsewhere) stops the run with one
    line saying to delete it, rather than being rewritten: Kaldi's scripts never overwrite an
    existing utt2num_frames (utils/data/get_utt2num_frames.sh says "already present" and keeps it),
    the data directory is the user's (often shared by several experiments), and the mismatch can
    mean that the features changed after the alignments were made, which the user should know.
    Without the file, the run writes it from the feature headers, as get_utt2num_frames.sh would."""
    path: str
    frames: Mapping[str, int]

    def check(self, utt: str, rows: int) -> None:
        recorded = self.frames.get(utt)
        if recorded != rows:
            said = f"has no line for utterance {utt} of feats.scp" if recorded is None else \
                f"says utterance {utt} has {recorded} frames but feats.scp has {rows}"
            raise InputError(f"{self.path}: {said}: the file is stale; delete it and rerun (the run writes it "
                             "again from feats.scp, as utils/data/get_utt2num_frames.sh does)")


def _checked_shape(archives: ArchiveFiles, scp_path: str, what: str, key: str, rx: str,
                   counts: dict[str, int]) -> tuple[int, int] | None:
    if is_pipe(rx) or rx.strip() == "-":
        counts["pipes"] += 1
        return None
    try:
        shape = archives.header_shape(rx)
    except KaldiFormatError as e:
        raise InputError(f"{scp_path}: {what} {key} ({rx}): {e}") from None
    counts["text" if shape is None else "checked"] += 1
    return shape


def check_features(feats_scp: str, input_dim: int, cmvn_scp: str | None = None, rank: int = 0,
                   world_size: int = 1, num_frames: NumFrames | None = None) -> list[ScpCheck]:
    """feats.scp against the network's input dim (and `num_frames`, the data directory's
    utt2num_frames, if it has one), and cmvn.scp (if given) against it: each CMVN entry is a
    2 x (dim + 1) statistics matrix (docs/kaldi-formats.md 8.3). Rank r of `world_size` checks its
    share of the entries (`check_matrix_scp`)."""
    checks = [check_matrix_scp(feats_scp, input_dim, rank=rank, world_size=world_size, num_frames=num_frames)]
    if cmvn_scp is not None:
        checks.append(check_matrix_scp(cmvn_scp, input_dim + 1, what="entry",
                                       expected_by=f"features of dim {input_dim}", rank=rank, world_size=world_size))
    return checks


@dataclass(frozen=True)
class OnlineIvectors:
    """`--feat.online-ivector-dir`: its scp and period."""
    scp: str
    period: int


def read_ivector_dir(ivector_dir: str) -> OnlineIvectors:
    """ivector_online.scp and ivector_period of an online i-vector directory (steps/online/nnet2/
    extract_ivectors_online.sh writes both), or InputError naming the file."""
    scp, period_path = (os.path.join(ivector_dir, n) for n in ("ivector_online.scp", "ivector_period"))
    for path in (scp, period_path):
        if not os.path.isfile(path):
            raise InputError(f"{path} is missing (--feat.online-ivector-dir)")
    with open(period_path) as f:
        text = f.read().strip()
    if not text.isdigit() or int(text) <= 0:
        raise InputError(f"{period_path}: expected a positive integer, found {text[:40]!r}")
    return OnlineIvectors(scp, int(text))


def check_ivectors(ivectors: OnlineIvectors, ivector_dim: int, num_frames: Mapping[str, int], rank: int = 0,
                   world_size: int = 1) -> None:
    """Every utterance of `num_frames` (rank r of `world_size` checks its share) has i-vectors of
    dim `ivector_dim` covering its frames (rows x period within IVECTOR_LENGTH_TOLERANCE)."""
    try:
        entries = dict(read_script(ivectors.scp))
    except KaldiFormatError as e:
        raise InputError(str(e)) from None
    counts = {"checked": 0, "pipes": 0, "text": 0}
    with ArchiveFiles() as archives:
        for utt in sorted(num_frames)[rank::world_size]:
            if utt not in entries:
                raise InputError(f"{ivectors.scp}: no i-vectors for utterance {utt} (of the training data's "
                                 "feats.scp): extract them for the same data directory")
            shape = _checked_shape(archives, ivectors.scp, "utterance", utt, entries[utt], counts)
            if shape is None:
                continue
            rows, dim = shape
            if dim != ivector_dim:
                raise InputError(f"{ivectors.scp}: utterance {utt} has i-vectors of dim {dim}, the network's "
                                 f"'ivector' input expects {ivector_dim}")
            frames = num_frames[utt]
            if rows == 0 or abs(frames - rows * ivectors.period) > IVECTOR_LENGTH_TOLERANCE:
                raise InputError(f"{ivectors.scp}: utterance {utt} has {frames} frames but {rows} i-vector rows "
                                 f"x ivector_period {ivectors.period} = {rows * ivectors.period} "
                                 "(mismatched ivector_period, or i-vectors of other features?)")


def check_alignments(ali_dir: str, trans_model: TransitionModel, store_dir: str,
                     tree_path: str | None = None, comm=None) -> PdfStore:
    """Checks that the tree (default `<ali_dir>/tree`) parses and has the transition model's number
    of pdfs, and puts the alignments into the PdfStore at `store_dir` (built, or rebuilt when the
    alignments changed), checking that every transition-id is in the transition model. Returns the
    store: the per-frame pdf-ids by utterance. With `comm`, every rank calls it and builds its
    share of the store (`pdf_store.build_pdf_store`)."""
    check_tree(tree_path or os.path.join(ali_dir, "tree"), trans_model,
               os.path.join(ali_dir, "final.mdl"))
    try:
        return ensure_pdf_store(ali_dir, store_dir, trans_model, comm)
    except KaldiFormatError as e:
        raise InputError(str(e)) from None


def check_tree(tree_path: str, trans_model: TransitionModel, model_path: str = "the transition model") -> int:
    """The tree's number of pdfs, which must equal the transition model's."""
    try:
        num_pdfs = read_tree_num_pdfs(tree_path)
    except OSError as e:
        raise InputError(f"{tree_path}: cannot read the tree: {e.strerror}") from None
    except KaldiFormatError as e:
        raise InputError(f"{tree_path}: not a Kaldi tree: {str(e).removeprefix(tree_path + ': ')}") from None
    if num_pdfs != trans_model.num_pdfs:
        raise InputError(f"{tree_path}: the tree has {num_pdfs} pdfs but {model_path} has "
                         f"{trans_model.num_pdfs} (tree and model from different systems?)")
    return num_pdfs


def check_minibatches(archive_frames: Sequence[int] | Mapping[int, int], chunk_width: int,
                      num_chunk_per_minibatch: str, eg_size: int = 0) -> None:
    """Every archive must give at least one minibatch: its chunks (frames // chunk_width)
    must reach the smallest size `--trainer.rnn.num-chunk-per-minibatch` allows at the end of
    input (nnet3-merge-egs discards the rest; docs/kaldi-formats.md 6.1).  `eg_size` picks
    the rule of a per-size string ("64=32/256=16"); the archives are numbered from 1."""
    rule = MinibatchSizeRule.parse(num_chunk_per_minibatch)
    items = archive_frames.items() if isinstance(archive_frames, Mapping) else enumerate(archive_frames, 1)
    for archive, frames in items:
        chunks = frames // chunk_width
        if rule.size_for(eg_size, chunks, input_ended=True) == 0:
            raise InputError(
                f"archive {archive}: {frames} frames make {chunks} chunks of {chunk_width} frames, "
                f"too few for one minibatch of --trainer.rnn.num-chunk-per-minibatch="
                f"{num_chunk_per_minibatch}: raise --trainer.samples-per-iter or lower "
                f"--trainer.rnn.num-chunk-per-minibatch")
