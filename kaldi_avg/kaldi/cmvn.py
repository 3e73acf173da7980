"""Cepstral mean and variance normalization as Kaldi's compute-cmvn-stats / apply-cmvn do it.

docs/kaldi-formats.md 8.3 (`src/transform/cmvn.cc`, `src/featbin/apply-cmvn.cc`). Stats are a
double 2 x (D+1) matrix: row 0 = [sum x_d..., count], row 1 = [sum x_d^2..., 0].
"""
from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .datadir import DataDir

log = logging.getLogger(__name__)

VARIANCE_FLOOR = 1e-20


class CmvnError(UsageError):
    """Bad CMVN options or statistics (one line naming the file and the speaker or utterance)."""


@dataclass(frozen=True)
class CmvnOptions:
    """apply-cmvn's switches; the defaults (mean normalization only) are Kaldi's."""
    norm_means: bool = True
    norm_vars: bool = False

    def __post_init__(self):
        if self.norm_vars and not self.norm_means:
            raise CmvnError("--norm-vars=true needs --norm-means=true (Kaldi refuses variance "
                            "normalization without mean normalization)")

    def to_text(self) -> str:
        """The `cmvn_opts` file text that parses back to these options."""
        return (f"--norm-means={'true' if self.norm_means else 'false'} "
                f"--norm-vars={'true' if self.norm_vars else 'false'}")


_BOOL_WORDS = {"true": True, "false": False}


def parse_cmvn_opts(text: str) -> CmvnOptions:
    """Parses a `cmvn_opts` string/file content: `--norm-means[=bool]`, `--norm-vars[=bool]`.

    Empty text means Kaldi's defaults. Options that change what apply-cmvn computes in ways
    not reproduced here (`--reverse`, `--utt2spk`, ...) are rejected rather than ignored.
    """
    values = {"norm-means": True, "norm-vars": False}
    for arg in shlex.split(text):
        name, eq, value = arg.partition("=")
        key = name[2:] if name.startswith("--") else None
        if key not in values:
            raise CmvnError(f"cmvn_opts: unsupported option {arg!r} (only --norm-means and "
                            f"--norm-vars are supported)")
        if not eq:
            values[key] = True
        elif value.lower() in _BOOL_WORDS:
            values[key] = _BOOL_WORDS[value.lower()]
        else:
            raise CmvnError(f"cmvn_opts: {arg!r}: value must be true or false")
    return CmvnOptions(norm_means=values["norm-means"], norm_vars=values["norm-vars"])


def accumulate_cmvn_stats(stats: np.ndarray | None, feats: np.ndarray) -> np.ndarray:
    """Adds one feature matrix (frames x D) to `stats` (None starts new stats); returns them."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise CmvnError(f"features must be a matrix, got shape {feats.shape}")
    dim = feats.shape[1]
    if stats is None:
        stats = np.zeros((2, dim + 1), dtype=np.float64)
    elif stats.shape != (2, dim + 1):
        raise CmvnError(f"feature dim {dim} does not match stats of shape {stats.shape}")
    # Kaldi forms x and x*x in float and accumulates in double.
    stats[0, :dim] += feats.sum(axis=0, dtype=np.float64)
    stats[1, :dim] += (feats * feats).sum(axis=0, dtype=np.float64)
    stats[0, dim] += feats.shape[0]
    return stats


def compute_cmvn_stats(feats_iter: Iterable[np.ndarray]) -> np.ndarray:
    """CMVN stats over all matrices of `feats_iter` (one speaker's utterances, say)."""
    stats = None
    for feats in feats_iter:
        stats = accumulate_cmvn_stats(stats, feats)
    if stats is None:
        raise CmvnError("no features to compute CMVN stats from")
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_means: bool = True,
               norm_vars: bool = False) -> np.ndarray:
    """Normalized float32 copy of `feats` (frames x D) with apply-cmvn's arithmetic."""
    feats = np.asarray(feats, dtype=np.float32)
    if not norm_means:
        if norm_vars:
            raise CmvnError("variance normalization needs mean normalization too")
        return feats.copy()
    return normalize(feats, cmvn_transform(stats, norm_vars))


def normalize(feats: np.ndarray, transform: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """offset + feats * scale for an (offset, scale) from `cmvn_transform`, in float32."""
    feats = np.asarray(feats, dtype=np.float32)
    offset, scale = transform
    if feats.ndim != 2 or feats.shape[1] != offset.shape[0]:
        raise CmvnError(f"dim mismatch: cmvn stats for dim {offset.shape[0]}, feats {feats.shape}")
    return offset + feats * scale


def cmvn_transform(stats: np.ndarray, norm_vars: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale), float32 as Kaldi keeps them, such that apply-cmvn with mean (and, with
    `norm_vars`, variance) normalization computes offset + feats * scale."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2:
        raise CmvnError(f"cmvn stats must be 2 x (dim + 1), got {stats.shape}")
    dim = stats.shape[1] - 1
    count = stats[0, dim]
    if count < 1.0:
        raise CmvnError(f"insufficient stats for cepstral mean and variance normalization: "
                        f"count = {count}")
    mean = stats[0, :dim] / count
    if not norm_vars:
        scale = np.ones(dim)
        offset = -mean
    else:
        var = stats[1, :dim] / count - mean * mean
        if np.any(var < VARIANCE_FLOOR):
            log.warning("flooring %d cepstral variance(s) to %g", int(np.sum(var < VARIANCE_FLOOR)),
                        VARIANCE_FLOOR)
            var = np.maximum(var, VARIANCE_FLOOR)
        scale = 1.0 / np.sqrt(var)
        if not np.all(np.isfinite(scale)):
            raise CmvnError("NaN or infinity in cepstral mean/variance computation")
        offset = -(mean * scale)
    # Kaldi stores offset and scale as float and applies them in float.
    return offset.astype(np.float32), scale.astype(np.float32)


class CmvnApplier:
    """Applies a data directory's CMVN (cmvn.scp via utt2spk) with given `cmvn_opts`.

    cmvn.scp may be keyed by speaker (the usual case) or by utterance. Call as
    `applier(utt, feats)`; the normalization of each key is computed once.
    """

    def __init__(self, datadir: str | DataDir, cmvn_opts: str | CmvnOptions = ""):
        self.data = datadir if isinstance(datadir, DataDir) else DataDir(datadir)
        self.opts = cmvn_opts if isinstance(cmvn_opts, CmvnOptions) else parse_cmvn_opts(cmvn_opts)
        self.per_speaker = True
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}   # key -> (offset, scale)
        if self.opts.norm_means:
            self.per_speaker = self._keyed_by_speaker()

    def _keyed_by_speaker(self) -> bool:
        table = self.data.cmvn
        if table is None:
            raise CmvnError(f"{self.data.file('cmvn.scp')}: missing, but cmvn_opts "
                            f"({self.opts.to_text()}) asks for normalization")
        keys = set(table)
        utt2spk = self.data.utt2spk
        # The utterances normalized: feats.scp's (an utterance there without a speaker would fail
        # mid-training otherwise), else utt2spk's.
        utts = list(self.data.feats) if self.data.feats is not None else list(utt2spk)
        no_speaker = [u for u in utts if u not in utt2spk]
        if not no_speaker and all(utt2spk[u] in keys for u in utts):
            return True
        if all(utt in keys for utt in utts):
            return False
        if no_speaker:   # validate_data_dir.sh's complaint; fix_data_dir.sh drops such utterances
            raise CmvnError(f"{self.data.file('utt2spk')}: no line for utterance {no_speaker[0]!r} of feats.scp "
                            f"({len(no_speaker)} in all): its CMVN stats are its speaker's "
                            f"(utils/fix_data_dir.sh {self.data.path} removes such utterances)")
        missing = sorted({utt2spk[u] for u in utts if utt2spk[u] not in keys})
        raise CmvnError(f"{self.data.file('cmvn.scp')}: has no stats for {len(missing)} speaker(s) "
                        f"of utt2spk, e.g. {missing[:3]} (nor one entry per utterance)")

    def stats_key(self, utt: str) -> str:
        if not self.per_speaker:
            return utt
        try:
            return self.data.utt2spk[utt]
        except KeyError:
            raise CmvnError(f"{self.data.file('utt2spk')}: no speaker for utterance {utt!r}") from None

    def __call__(self, utt: str, feats: np.ndarray) -> np.ndarray:
        if not self.opts.norm_means:
            return np.array(feats, dtype=np.float32)
        key = self.stats_key(utt)
        try:
            transform = self._cache.get(key)
            if transform is None:   # once per speaker, not per utterance
                if key not in self.data.cmvn:
                    raise CmvnError(f"{self.data.file('cmvn.scp')}: no stats")
                transform = self._cache[key] = cmvn_transform(self.data.cmvn[key], self.opts.norm_vars)
            return normalize(feats, transform)
        except CmvnError as e:
            raise CmvnError(f"utterance {utt!r} (cmvn key {key!r}): {e}") from None
