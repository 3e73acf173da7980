"""The training material of the GMM stages, per job of `<data>/split<nj>`: features after the
delta pipeline and transcripts as word ids (OOVs mapped to `oov.int`, as sym2int.pl --map-oov).

Utterances that cannot be used (no transcript, no features, no frames) are skipped as the Kaldi
programs skip them, but every skip is recorded with its reason so the caller can log it.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_path
from ..kaldi.datadir import DataDir, split_data
from ..kaldi.tables import write_int_vector_table
from .featpipe import FeatureError, SkipReport, feature_loader, usable_utterances
from .lang import Lang


@dataclass
class Utterance:
    id: str
    feats: np.ndarray
    word_ids: list[int]


@dataclass
class Job:
    index: int              # 1-based, as JOB in the Kaldi scripts (<data>/split<nj>/<index>)
    utts: list[Utterance]


def load_jobs(data_dir: str, lang: Lang, nj: int, cmvn_opts: str) -> tuple[list[Job], SkipReport, int]:
    """(jobs, skipped utterances, number of OOV words mapped to the OOV symbol)."""
    data = DataDir(data_dir)
    if data.text is None:
        raise FeatureError(f"{data.file('text')}: missing (transcripts are needed for training)")
    skipped = SkipReport()
    num_oov = 0
    jobs = []
    for index, part in enumerate(split_data(data, nj), 1):
        load = feature_loader(part, cmvn_opts, deltas=True)
        text = part.text or {}
        utts = []
        for utt in usable_utterances(part, skipped):
            if utt not in text:
                skipped.add("without a transcript in text", utt)
                continue
            words = text[utt].split()
            ids = lang.words_to_ids(words)
            num_oov += sum(1 for w in words if w not in lang.words)
            utts.append(Utterance(utt, load(utt), ids))
        jobs.append(Job(index, utts))
    return jobs, skipped, num_oov


def write_alignments(path: str, alignments: Iterable[tuple[str, Iterable[int]]]) -> int:
    """`ali.JOB.gz` as align_si.sh writes it (`ark,t:|gzip -c >ali.JOB.gz`)."""
    with atomic_path(path) as tmp:
        return write_int_vector_table(f"ark,t:| gzip -c > {shlex.quote(tmp)}",
                                      ((k, np.asarray(v, np.int32)) for k, v in alignments))
