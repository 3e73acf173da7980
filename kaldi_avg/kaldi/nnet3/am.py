"""nnet3 model files: a raw `Nnet`, or `final.mdl` = TransitionModel + Nnet + contexts + priors
(docs/kaldi-formats.md 3.1, 3.3). Any of them, binary or text, is read by `read_nnet3_file`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...atomic import write_bytes
from ..binary import KaldiFormatError, KaldiReader, KaldiWriter
from ..transition import TransitionModel
from .context import is_simple_nnet, model_context
from .nnet import Nnet


@dataclass
class Nnet3Model:
    """What an nnet3 file holds. `trans_model is None` means a raw nnet (`*.raw`)."""
    nnet: Nnet
    trans_model: TransitionModel | None = None
    priors: np.ndarray | None = None  # probabilities (sum 1), or None / empty for "no priors"

    @property
    def is_am(self) -> bool:
        return self.trans_model is not None

    def check(self) -> None:
        num_pdfs = self.nnet.output_dim("output")
        if self.trans_model is not None and self.trans_model.num_pdfs != num_pdfs:
            raise KaldiFormatError(f"transition model has {self.trans_model.num_pdfs} pdfs but the network's "
                                   f"output dim is {num_pdfs}")
        if self.priors is not None and self.priors.size:
            if self.priors.size != num_pdfs:
                raise KaldiFormatError(f"priors have dim {self.priors.size}, the network's output dim is {num_pdfs}")
            if not np.all(np.isfinite(self.priors)) or np.any(self.priors <= 0):
                raise KaldiFormatError("priors must be finite and strictly positive (they are probabilities)")

    def info(self) -> str:
        """What `nnet3-am-info` (or `nnet3-info` for a raw nnet) prints."""
        context = model_context(self.nnet) if is_simple_nnet(self.nnet) else None
        if not self.is_am:
            return self.nnet.info(context)
        lines = [f"left-context: {context[0]}", f"right-context: {context[1]}",
                 f"input-dim: {self.nnet.input_dim('input')}", f"ivector-dim: {self.nnet.input_dim('ivector')}",
                 f"num-pdfs: {self.nnet.output_dim('output')}"]
        priors = self.priors if self.priors is not None else np.zeros(0)
        lines.append(f"prior-dimension: {priors.size}")
        if priors.size:
            lines += [f"prior-sum: {priors.sum():.6g}", f"prior-min: {priors.min():.6g}",
                      f"prior-max: {priors.max():.6g}"]
        lines.append("# Nnet info follows.")
        return "".join(line + "\n" for line in lines) + self.nnet.info(context)

    def to_bytes(self, binary: bool = True, text_digits: int = 9) -> bytes:
        """Text uses 9 significant digits by default, which round-trips float32 exactly (Kaldi's own
        7 digits do not); Kaldi reads either."""
        self.check()
        w = KaldiWriter(binary, text_digits)
        w.header()
        if self.trans_model is not None:
            self.trans_model.write(w)
        self.nnet.write(w)
        if self.trans_model is not None:
            left, right = model_context(self.nnet)
            w.token("<LeftContext>")
            w.int32(left)
            w.token("<RightContext>")
            w.int32(right)
            w.token("<Priors>")
            w.vector(np.zeros(0, np.float32) if self.priors is None else self.priors)
        return w.getvalue()

    def write(self, path: str, binary: bool = True) -> None:
        write_bytes(path, self.to_bytes(binary))


def read_nnet3_bytes(data: bytes, source: str) -> Nnet3Model:
    r = KaldiReader.from_bytes(data, source)
    if r.peek_token() == "<TransitionModel>":
        tm = TransitionModel.read(r)
        nnet = Nnet.read(r)
        r.expect_token("<LeftContext>")
        r.read_int32()  # recomputed from the network, as Kaldi does
        r.expect_token("<RightContext>")
        r.read_int32()
        r.expect_token("<Priors>")
        priors = r.read_vector()
        model = Nnet3Model(nnet, tm, priors if priors.size else None)
    else:
        model = Nnet3Model(Nnet.read(r))
    try:
        model.check()
    except KaldiFormatError as e:
        raise KaldiFormatError(f"{source}: {e}") from None
    return model


def read_nnet3_file(path: str) -> Nnet3Model:
    with open(path, "rb") as f:
        return read_nnet3_bytes(f.read(), path)
