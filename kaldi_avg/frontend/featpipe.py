"""The feature pipelines of the Kaldi scripts: `apply-cmvn $cmvn_opts --utt2spk=... scp:cmvn.scp
scp:feats.scp ark:- | add-deltas ark:- ark:-` (train_mono.sh, align_si.sh, decode.sh) and
apply-cmvn alone (steps/nnet3/decode.sh).

`cmvn_opts` is the text of an experiment's `cmvn_opts` file (apply-cmvn's options); an empty
string means apply-cmvn's defaults (mean normalisation per speaker).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import kaldi_native_fbank as knf
import numpy as np

from ..kaldi.cmvn import CmvnApplier, CmvnError
from ..kaldi.datadir import DataDir

NO_CMVN = "--norm-means=false --norm-vars=false"  # steps/nnet3/decode.sh when cmvn_opts is absent


class FeatureError(ValueError):
    """Features or CMVN stats are missing or malformed; names the file and utterance."""


def read_cmvn_opts(model_dir: str, default: str = "") -> str:
    """The `cmvn_opts` file of an experiment dir (`default` when the file is absent)."""
    path = os.path.join(model_dir, "cmvn_opts")
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


@dataclass
class SkipReport:
    """Utterances left out of a stage, by reason (reported, never dropped silently)."""
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, utt: str) -> None:
        self.skipped.setdefault(reason, []).append(utt)

    def count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def lines(self) -> list[str]:
        return [f"skipped {len(utts)} utterance(s) {reason}: {' '.join(utts)}"
                for reason, utts in self.skipped.items()]


def usable_utterances(data: DataDir, skipped: SkipReport) -> list[str]:
    """The utterances of `data` that have features with at least one frame (the Kaldi programs
    warn about and skip the others; here they are recorded in `skipped`)."""
    if data.feats is None:
        raise FeatureError(f"{data.file('feats.scp')}: missing")
    out = []
    for utt in data.utts:
        if utt not in data.feats:
            skipped.add("without features in feats.scp", utt)
        elif data.feats.shape(utt)[0] == 0:
            skipped.add("with zero frames", utt)
        else:
            out.append(utt)
    return out


def add_deltas(feats: np.ndarray) -> np.ndarray:
    """add-deltas with Kaldi's defaults (order 2, window 2)."""
    return np.asarray(knf.compute_deltas(knf.DeltaOptions(order=2, window=2),
                                         np.ascontiguousarray(feats, np.float32)))


def feature_loader(data: DataDir, cmvn_opts: str, deltas: bool) -> Callable[[str], np.ndarray]:
    """utt -> features after apply-cmvn (with `cmvn_opts`) and, if `deltas`, add-deltas."""
    if data.feats is None:
        raise FeatureError(f"{data.file('feats.scp')}: missing")
    try:
        cmvn = CmvnApplier(data, cmvn_opts)
    except CmvnError as e:
        raise FeatureError(str(e)) from None

    def load(utt: str) -> np.ndarray:
        if utt not in data.feats:
            raise FeatureError(f"{data.file('feats.scp')}: no features for utterance {utt!r}")
        x = data.feats[utt]
        if x.shape[0] == 0:
            raise FeatureError(f"{data.file('feats.scp')}: utterance {utt!r} has no frames")
        try:
            x = cmvn(utt, x)
        except CmvnError as e:
            raise FeatureError(str(e)) from None
        return add_deltas(x) if deltas else x

    return load
