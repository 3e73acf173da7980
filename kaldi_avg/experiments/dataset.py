"""What every run of an experiment shares: the utterance source, the archives (worker shards), the
held-out diagnostic set and the network definition.

The network is the fsdd recipe's LSTM (egs/fsdd/s5/local/nnet3/make_xconfig.sh) without the fixed-affine LDA
layer: the inputs are CMVN-normalised 13-dim MFCCs, so no LDA matrix needs estimating, and a spliced
±2-frame input feeds one fast-LSTM layer.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..data import (
    ArchivePlan,
    ChunkConfig,
    DiagnosticSet,
    SkipReport,
    UtteranceSource,
    build_source,
    chunks_for_utterance,
    plan_archives,
    screen_utterances,
)
from ..kaldi.nnet3.nnet import Nnet
from ..kaldi.transition import read_transition_model
from ..model.build import build_nnet, xconfig_context
from .prepare import Prepared

CHUNK_WIDTH = 20
MIN_ARCHIVE_CHUNKS = 256   # so an archive holds a few full minibatches of the largest size used (64 chunks)
DERIV_TRUNCATE_MARGIN = 8
XCONFIG = """input dim={feat_dim} name=input
fast-lstm-layer name=lstm1 input=Append(-2,-1,0,1,2) cell-dim={cell_dim} delay=-1
output-layer name=output input=lstm1 output-delay={label_delay} dim={num_pdfs} max-change=1.5
"""


@dataclass
class Dataset:
    source: UtteranceSource
    plan: ArchivePlan
    chunk_config: ChunkConfig
    valid: DiagnosticSet
    xconfig: str
    min_deriv_time: int
    mean_chunk_frames: float     # output frames per training chunk, averaged over the training data
    train_frames: int            # output frames of one epoch
    description: str

    def build_nnet(self, seed: int) -> Nnet:
        return build_nnet(self.xconfig, "experiment.xconfig", self.source.num_pdfs, seed=seed)


def xconfig_text(feat_dim: int, num_pdfs: int, cell_dim: int, label_delay: int = 0) -> str:
    return XCONFIG.format(feat_dim=feat_dim, num_pdfs=num_pdfs, cell_dim=cell_dim, label_delay=label_delay)


def load(prepared: Prepared, cell_dim: int, num_archives: int, srand: int = 0) -> Dataset:
    """The source from the recipe's data dir and alignments (with the recipe's CMVN)."""
    trans_model = read_transition_model(f"{prepared.ali_dir}/final.mdl")
    source, summary = build_source(prepared.feat_dir, trans_model, SkipReport(), ali_dir=prepared.ali_dir)
    return from_source(in_memory(source), cell_dim, num_archives, srand, f"{prepared.corpus}: {summary}")


def in_memory(source: UtteranceSource) -> UtteranceSource:
    """The same source with every utterance's (CMVN-applied) features read once: the corpora here are
    a few MB, and re-reading archives would otherwise cost about a third of each training step."""
    features = {utt: np.asarray(source.load_features(utt), np.float32) for utt in source.lengths}
    return dataclasses.replace(source, load_features=features.__getitem__)


def from_source(source: UtteranceSource, cell_dim: int, num_archives: int, srand: int = 0,
                description: str = "") -> Dataset:
    """Chunks of 20 frames without extra left context, `num_archives` frame-balanced shards (at least
    the largest N, so workers read disjoint data, unless the corpus is too small to fill that many
    archives with `MIN_ARCHIVE_CHUNKS` chunks) and Kaldi's held-out subset."""
    xconfig = xconfig_text(source.feat_dim, source.num_pdfs, cell_dim)
    left, right = xconfig_context(xconfig, "experiment.xconfig", source.num_pdfs)
    config = ChunkConfig.from_egs_options(str(CHUNK_WIDTH), model_left_context=left, model_right_context=right,
                                          chunk_left_context=0, chunk_right_context=0)
    usable = screen_utterances(source, config)
    total = sum(usable.values())
    num_archives = max(1, min(num_archives, total // (CHUNK_WIDTH * MIN_ARCHIVE_CHUNKS)))
    samples_per_iter = max(1, math.floor(total / (CHUNK_WIDTH * num_archives)))
    plan = plan_archives(usable, samples_per_iter=samples_per_iter, principal_chunk_width=CHUNK_WIDTH, srand=srand)
    train = [utt for archive in plan.archives for utt in archive]
    chunks = [chunk for utt in train for chunk in chunks_for_utterance(utt, usable[utt], config, srand)]
    train_frames = sum(chunk.width for chunk in chunks)
    valid = DiagnosticSet(source, plan.valid_utts, config, srand=srand, name="valid")
    text = (f"{description}; {len(train)} training utterances ({train_frames} frames) in {plan.num_archives} "
            f"archives, {len(plan.valid_utts)} held-out utterances, {source.feat_dim}-dim features, "
            f"{source.num_pdfs} pdfs, LSTM cell-dim {cell_dim}")
    return Dataset(source, plan, config, valid, xconfig, -(DERIV_TRUNCATE_MARGIN + left),
                   train_frames / max(1, len(chunks)), train_frames, text)
