"""The training material of the GMM stages, per job of `<data>/split<nj>`: features after the
delta pipeline and transcripts as word ids (OOVs mapped to `oov.int`, as sym2int.pl --map-oov).

Utterances that cannot be used (no transcript, no features, no frames) are skipped as the Kaldi
programs skip them, but every skip is recorded with its reason so the caller can log it.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..kaldi.datadir import DataDir, split_data
from ..kaldi.tables import read_int_vector_table, write_int_vector_table
from .atomic import atomic_path
from .featpipe import FeatureError, feature_loader
from .lang import Lang


@dataclass
class Utterance:
    id: str
    feats: np.ndarray
    word_ids: list[int]


@dataclass
class Job:
    index: int              # 1-based, as JOB in the Kaldi scripts
    data: DataDir           # <data>/split<nj>/<index>
    utts: list[Utterance]


@dataclass
class SkipReport:
    """Utterances left out of a stage, by reason."""
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, utt: str) -> None:
        self.skipped.setdefault(reason, []).append(utt)

    def count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def lines(self) -> list[str]:
        return [f"skipped {len(utts)} utterance(s), {reason}: {' '.join(utts)}"
                for reason, utts in self.skipped.items()]


def load_jobs(data_dir: str, lang: Lang, nj: int, cmvn_opts: str, deltas: bool = True
              ) -> tuple[list[Job], SkipReport, int]:
    """(jobs, skipped utterances, number of OOV words mapped to the OOV symbol)."""
    data = DataDir(data_dir)
    if data.text is None:
        raise FeatureError(f"{data.file('text')}: missing (transcripts are needed for training)")
    skipped = SkipReport()
    num_oov = 0
    jobs = []
    for index, part in enumerate(split_data(data, nj), 1):
        load = feature_loader(part, cmvn_opts, deltas)
        text = part.text or {}
        utts = []
        for utt in part.utts:
            if utt not in text:
                skipped.add("without a transcript in text", utt)
                continue
            if part.feats is None or utt not in part.feats:
                skipped.add("without features in feats.scp", utt)
                continue
            words = text[utt].split()
            ids = lang.words_to_ids(words)
            num_oov += sum(1 for w in words if w not in lang.words)
            utts.append(Utterance(utt, load(utt), ids))
        jobs.append(Job(index, part, utts))
    return jobs, skipped, num_oov


def write_alignments(path: str, alignments: Iterable[tuple[str, Iterable[int]]]) -> int:
    """`ali.JOB.gz` as align_si.sh writes it (`ark,t:|gzip -c >ali.JOB.gz`)."""
    with atomic_path(path) as tmp:
        return write_int_vector_table(f"ark,t:| gzip -c > {shlex.quote(tmp)}",
                                      ((k, np.asarray(v, np.int32)) for k, v in alignments))


def read_alignments(path: str) -> dict[str, np.ndarray]:
    """An `ali.JOB.gz` file (text or binary entries)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such alignment file")
    return dict(read_int_vector_table(f"ark:gunzip -c {shlex.quote(path)} |"))
