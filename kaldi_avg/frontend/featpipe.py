"""The feature pipelines of the Kaldi scripts: `apply-cmvn $cmvn_opts --utt2spk=... scp:cmvn.scp
scp:feats.scp ark:- | add-deltas ark:- ark:-` (train_mono.sh, align_si.sh, decode.sh) and
apply-cmvn alone (steps/nnet3/decode.sh).

`cmvn_opts` is the text of an experiment's `cmvn_opts` file (apply-cmvn's options); an empty
string means apply-cmvn's defaults (mean normalisation per speaker).
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Callable

import numpy as np
import kaldi_native_fbank as knf

from ..kaldi.datadir import DataDir

NO_CMVN = "--norm-means=false --norm-vars=false"  # steps/nnet3/decode.sh when cmvn_opts is absent


class FeatureError(ValueError):
    """Features or CMVN stats are missing or malformed; names the file and utterance."""


@dataclass(frozen=True)
class CmvnOptions:
    norm_means: bool = True
    norm_vars: bool = False

    @classmethod
    def parse(cls, cmvn_opts: str, source: str = "cmvn_opts") -> "CmvnOptions":
        values = {"norm-means": True, "norm-vars": False}
        for tok in shlex.split(cmvn_opts):
            name, eq, value = tok.partition("=")
            key = name[2:] if name.startswith("--") else None
            if key not in values:
                raise FeatureError(f"{source}: unsupported apply-cmvn option {tok!r} "
                                   f"(supported: --norm-means, --norm-vars)")
            if not eq:
                values[key] = True
            elif value.lower() in ("true", "t", "1"):
                values[key] = True
            elif value.lower() in ("false", "f", "0"):
                values[key] = False
            else:
                raise FeatureError(f"{source}: {tok!r}: expected true or false")
        if values["norm-vars"] and not values["norm-means"]:
            raise FeatureError(f"{source}: --norm-vars=true requires --norm-means=true (as apply-cmvn)")
        return cls(values["norm-means"], values["norm-vars"])


def read_cmvn_opts(model_dir: str, default: str = "") -> str:
    """The `cmvn_opts` file of an experiment dir (`default` when the file is absent)."""
    path = os.path.join(model_dir, "cmvn_opts")
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def add_deltas(feats: np.ndarray) -> np.ndarray:
    """add-deltas with Kaldi's defaults (order 2, window 2)."""
    return np.asarray(knf.compute_deltas(knf.DeltaOptions(order=2, window=2),
                                         np.ascontiguousarray(feats, np.float32)))


def feature_loader(data: DataDir, cmvn_opts: str, deltas: bool) -> Callable[[str], np.ndarray]:
    """utt -> features after apply-cmvn (with `cmvn_opts`) and, if `deltas`, add-deltas."""
    opts = CmvnOptions.parse(cmvn_opts)
    if data.feats is None:
        raise FeatureError(f"{data.file('feats.scp')}: missing")
    if opts.norm_means and data.cmvn is None:
        raise FeatureError(f"{data.file('cmvn.scp')}: missing (needed for cmvn_opts {cmvn_opts!r})")
    knf_opts = knf.CmvnOptions()
    knf_opts.norm_vars = opts.norm_vars
    utt2spk = data.utt2spk

    def load(utt: str) -> np.ndarray:
        if utt not in data.feats:
            raise FeatureError(f"{data.file('feats.scp')}: no features for utterance {utt!r}")
        x = np.ascontiguousarray(data.feats[utt], np.float32)
        if x.shape[0] == 0:
            raise FeatureError(f"{data.file('feats.scp')}: utterance {utt!r} has no frames")
        if opts.norm_means:
            spk = utt2spk.get(utt, utt)
            if spk not in data.cmvn:
                raise FeatureError(f"{data.file('cmvn.scp')}: no stats for speaker {spk!r} (utterance {utt!r})")
            stats = np.ascontiguousarray(data.cmvn[spk], np.float64)
            if stats.shape != (2, x.shape[1] + 1) or stats[0, -1] < 1.0:
                raise FeatureError(f"{data.file('cmvn.scp')}: stats of {spk!r} have shape {stats.shape} "
                                   f"and count {stats[0, -1] if stats.size else 0} (features of {utt!r} "
                                   f"have dim {x.shape[1]})")
            x = np.asarray(knf.apply_cmvn(stats, knf_opts, x))
        return add_deltas(x) if deltas else x

    return load
