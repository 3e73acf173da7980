"""Shared pieces of nnet3-init's `InitFromConfig`: learning-rate and natural-gradient options,
Gaussian initialization, and loading `matrix=`/`vector=` files (binary or text Kaldi objects)."""
from __future__ import annotations

import numpy as np

from ...binary import KaldiFormatError, KaldiReader
from ..config import ConfigLine, NetworkConfigError


def config_error(cfg: ConfigLine, type_name: str, msg: str) -> NetworkConfigError:
    return NetworkConfigError(f"{cfg.where}: {type_name}: {msg} in: {cfg.text}")


def require(cfg: ConfigLine, type_name: str, condition: bool, msg: str) -> None:
    if not condition:
        raise config_error(cfg, type_name, msg)


def learning_rate_options(cfg: ConfigLine) -> dict:
    """`UpdatableComponent::InitLearningRatesFromConfig` (ranges are checked by `validate`)."""
    return dict(learning_rate=cfg.get_float("learning-rate", 0.001),
                learning_rate_factor=cfg.get_float("learning-rate-factor", 1.0),
                max_change=cfg.get_float("max-change", 0.0),
                l2_regularize=cfg.get_float("l2-regularize", 0.0))


def natural_gradient_options(cfg: ConfigLine, input_dim: int, output_dim: int) -> dict:
    """rank-in/rank-out default to min(20, (in+1)/2) and min(80, (out+1)/2), as Kaldi does."""
    rank_in = cfg.get_int("rank-in", -1)
    rank_out = cfg.get_int("rank-out", -1)
    return dict(rank_in=rank_in if rank_in >= 0 else min(20, (input_dim + 1) // 2),
                rank_out=rank_out if rank_out >= 0 else min(80, (output_dim + 1) // 2),
                update_period=cfg.get_int("update-period", 4),
                num_samples_history=cfg.get_float("num-samples-history", 2000.0),
                alpha=cfg.get_float("alpha", 4.0))


def gaussian(rng: np.random.Generator, shape, stddev: float, mean: float = 0.0) -> np.ndarray:
    """Kaldi's `SetRandn(); Scale(stddev); Add(mean)` (same distribution, not the same numbers)."""
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(stddev)
            + np.float32(mean)).astype(np.float32)


def _open(cfg: ConfigLine, type_name: str, key: str) -> KaldiReader:
    path = cfg.get_str(key)
    if path.endswith("|") or path == "-":
        raise config_error(cfg, type_name, f"{key}={path}: pipes and stdin are not supported, "
                                           "give a file name")
    try:
        return KaldiReader.open(path)
    except OSError as e:
        raise config_error(cfg, type_name, f"cannot read {key}={path}: {e.strerror}") from None


def read_matrix_file(cfg: ConfigLine, type_name: str, key: str = "matrix") -> np.ndarray:
    r = _open(cfg, type_name, key)
    try:
        return r.read_matrix()
    except KaldiFormatError as e:
        raise config_error(cfg, type_name, f"{key}=: not a Kaldi matrix: {e}") from None


def read_vector_file(cfg: ConfigLine, type_name: str, key: str) -> np.ndarray:
    r = _open(cfg, type_name, key)
    try:
        return r.read_vector()
    except KaldiFormatError as e:
        raise config_error(cfg, type_name, f"{key}=: not a Kaldi vector: {e}") from None
