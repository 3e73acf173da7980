"""Checkpoints: the nnet3 model bytes (the single source of truth for the network) plus the
training state, written atomically.

Keeping the network as Kaldi binary bytes means a checkpoint, an imported Kaldi model and an
exported `final.mdl` can never disagree: import and export only convert the container.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch

from ..atomic import write_bytes
from ..kaldi.binary import KaldiFormatError
from ..kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes, read_nnet3_file

FORMAT = "kaldi-avg-checkpoint/1"


@dataclass
class Checkpoint:
    model: Nnet3Model
    xconfig: str | None = None
    train_state: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str) -> None:
        payload = {"format": FORMAT, "nnet3": self.model.to_bytes(binary=True), "xconfig": self.xconfig,
                   "train_state": self.train_state}
        buf = io.BytesIO()
        torch.save(payload, buf)
        write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str) -> Checkpoint:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises many types for a file that is not a checkpoint
            raise KaldiFormatError(f"{path}: not a kaldi-avg checkpoint ({e})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise KaldiFormatError(f"{path}: not a kaldi-avg checkpoint (format {payload.get('format')!r})"
                                   if isinstance(payload, dict) else f"{path}: not a kaldi-avg checkpoint")
        return cls(read_nnet3_bytes(payload["nnet3"], f"{path}[nnet3]"), payload.get("xconfig"),
                   payload.get("train_state") or {})


def is_checkpoint(path: str) -> bool:
    """Checkpoints are zip files (torch.save); Kaldi files start with \\0B or a '<' token."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_model(path: str) -> Nnet3Model:
    """A checkpoint or any Kaldi nnet3 file (raw or final.mdl, binary or text)."""
    return Checkpoint.load(path).model if is_checkpoint(path) else read_nnet3_file(path)
