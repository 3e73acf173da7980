"""`nnet3-compute` over Kaldi tables: features in, network outputs out, with online i-vectors
(docs/kaldi-formats.md 3.5) and frame subsampling (3.4, 7.1): what `kaldi-avg compute` runs.

`--use-priors=true` reads a final.mdl (TransitionModel + AmNnetSimple, as nnet3-compute does) and
subtracts its log priors; a chain model's priors are empty, and then nothing is subtracted
(`DecodableNnetSimple` subtracts only a non-empty vector, docs/kaldi-formats.md 3.3-3.4)."""
from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import torch

from ..data.checks import InputError
from ..data.report import DataError
from ..errors import UsageError
from ..kaldi.binary import KaldiFormatError
from ..kaldi.nnet3.context import model_context
from ..kaldi.tables import MatrixTable, read_matrix_table, write_matrix_table
from .checkpoint import load_model
from .compute import ChunkOptions, compute_utterances, rounded_frames_per_chunk
from .graph import NnetModule


def compute_device(use_gpu: str) -> str:
    """nnet3-compute's --use-gpu: yes requires CUDA, optional and wait take it when present."""
    device = "cuda" if use_gpu != "no" and torch.cuda.is_available() else "cpu"
    if use_gpu == "yes" and device == "cpu":
        raise UsageError("--use-gpu=yes but no CUDA device is available")
    return device


def compute_tables(model_in: str, feats_rspecifier: str, matrix_wspecifier: str, opts: ChunkOptions,
                   online_ivectors: str = "", use_priors: bool = False, apply_exp: bool = False,
                   device: str = "cpu") -> tuple[int, int]:
    """Writes the network's output for every utterance; returns (done, failed). As nnet3-compute,
    an utterance without i-vectors or frames fails with a warning and the others go on."""
    model = load_model(model_in)
    log_priors = None
    if use_priors:
        if not model.is_am:
            raise KaldiFormatError(f"{model_in}: --use-priors=true needs an acoustic model (a .mdl file with a "
                                   "transition model), not a raw nnet")
        if model.priors is not None:  # empty priors (a chain model): nothing to subtract
            log_priors = np.log(model.priors.astype(np.float32))
    in_dim = model.nnet.input_dim("input")
    # nnet3-compute requires the i-vector dim to be the `ivector` input's, 0 for none
    ivector_dim = max(0, model.nnet.input_dim("ivector"))
    if ivector_dim and not online_ivectors:
        raise UsageError(f"{model_in}: the network has an 'ivector' input of dim {ivector_dim}; "
                         "give --online-ivectors and --online-ivector-period")
    if online_ivectors and not ivector_dim:
        raise UsageError(f"{model_in}: --online-ivectors given but the network has no 'ivector' input")
    if online_ivectors and opts.online_ivector_period <= 0:
        raise UsageError("--online-ivectors needs --online-ivector-period > 0")
    ivector_table = MatrixTable(online_ivectors) if online_ivectors else None
    rounded = rounded_frames_per_chunk(opts, model.nnet.modulus())
    if rounded != opts.frames_per_chunk:  # CheckAndFixConfigs' message
        why = (f"to make it a multiple of --frame-subsampling-factor={opts.frame_subsampling_factor}"
               if model.nnet.modulus() == 1 else
               f"due to --frame-subsampling-factor={opts.frame_subsampling_factor} and nnet shift-invariance "
               f"modulus = {model.nnet.modulus()}")
        print(f"LOG (kaldi-avg compute) Increasing --frames-per-chunk from {opts.frames_per_chunk} to {rounded} {why}",
              file=sys.stderr)
    counts = {"done": 0, "failed": 0}

    def fail(message: str) -> None:
        print(f"WARNING (kaldi-avg compute) {message}", file=sys.stderr)
        counts["failed"] += 1

    def inputs() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for utt, feats in read_matrix_table(feats_rspecifier):
            if feats.shape[0] == 0:
                fail(f"Zero-length utterance: {utt}")
                continue
            if feats.shape[1] != in_dim:
                raise InputError(f"{feats_rspecifier}: utterance {utt} has features of dim {feats.shape[1]}, "
                                 f"{model_in} expects {in_dim}")
            if ivector_table is None:
                yield utt, feats, None
            elif utt not in ivector_table:
                fail(f"No online iVector available for utterance {utt} in {online_ivectors}")
            elif ivector_table.shape(utt)[1] != ivector_dim:
                raise InputError(f"{online_ivectors}: utterance {utt} has i-vector dim {ivector_table.shape(utt)[1]}, "
                                 f"the network's 'ivector' input expects {ivector_dim}")
            else:
                yield utt, feats, ivector_table[utt]

    def outputs() -> Iterator[tuple[str, np.ndarray]]:
        module = NnetModule(model.nnet).to(device)
        for utt, out in compute_utterances(module, inputs(), opts, model_context(model.nnet), log_priors):
            counts["done"] += 1
            yield utt, np.exp(out) if apply_exp else out

    try:
        write_matrix_table(matrix_wspecifier, outputs())
    except DataError as e:  # a short i-vector matrix: compute names the utterance, we the file
        raise InputError(f"{online_ivectors}: {e}") from None
    return counts["done"], counts["failed"]
