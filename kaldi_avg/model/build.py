"""Networks from xconfig files (the same config lines Kaldi's `xconfig_to_configs.py` writes) and
from Kaldi's config files, initialised the way `nnet3-init` initialises them."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from ..kaldi.nnet3.am import Nnet3Model
from ..kaldi.nnet3.config import NetworkConfigError
from ..kaldi.nnet3.context import model_context
from ..kaldi.nnet3.nnet import Nnet
from ..kaldi.transition import read_transition_model
from ..kaldi.xconfig import get_config_lines, parse_xconfig, substitute, write_layer_files
from .checkpoint import Checkpoint

_MATRIX = re.compile(r"(type=FixedAffineComponent\s+)matrix=(\S+)")


def replace_matrix_files(lines: list[str], fields: Callable[[str], str | None]) -> list[str]:
    """`lines` with each FixedAffineComponent's `matrix=FILE` replaced by `fields(FILE)` (None keeps
    it): another file, or `input-dim=N output-dim=M` for a random matrix as in ref.config."""
    def replace(m: re.Match) -> str:
        new = fields(m.group(2))
        return m.group(0) if new is None else m.group(1) + new
    return [_MATRIX.sub(replace, line) for line in lines]


def matrix_files(lines: list[str]) -> list[str]:
    """The files the FixedAffineComponents of `lines` read."""
    return [m.group(2) for line in lines for m in _MATRIX.finditer(line)]


def config_text(xconfig_text: str, source: str, which: str = "final", num_pdfs: int | None = None,
                lda_mat: str | None = None) -> str:
    """The `init`, `ref` or `final` config of an xconfig; `lda_mat` replaces the matrix file of
    fixed-affine layers. Writes the files the layers write (idct-layer's matrix)."""
    subs = {} if num_pdfs is None else {"NUM_PDFS": num_pdfs}
    text = substitute(xconfig_text, subs)
    if re.search(r"\bNUM_PDFS\b", text):
        raise NetworkConfigError(f"{source}: the xconfig uses NUM_PDFS; give --num-pdfs or --trans-model")
    layers = parse_xconfig(text, source)
    lines = get_config_lines(layers)[which]
    # Layer-written matrices (idct-layer) exist once written, as after xconfig_to_configs.py;
    # `lda_mat` replaces only the others.
    write_layer_files(layers)
    written = {path for layer in layers for path in layer.files()}
    if lda_mat is not None:
        lines = replace_matrix_files(lines, lambda path: None if path in written else f"matrix={lda_mat}")
    for path in matrix_files(lines):
        if not os.path.exists(path):
            raise NetworkConfigError(f"{source}: fixed-affine-layer matrix {path} does not exist "
                              "(estimate it first, or pass --lda-mat)")
    return "\n".join(lines) + "\n"


def build_nnet(xconfig_text: str, source: str, num_pdfs: int | None = None, lda_mat: str | None = None,
               seed: int = 0, which: str = "final") -> Nnet:
    text = config_text(xconfig_text, source, which, num_pdfs, lda_mat)
    return Nnet.from_config(text, f"{source} ({which}.config)", rng=np.random.default_rng(seed))


def build_from_configs(configs: Sequence[tuple[str, str]], existing: Nnet | None = None, seed: int = 0,
                       matrix_fields: Callable[[str], str | None] = lambda path: None) -> Nnet:
    """`nnet3-init [existing.raw] first.config 1.raw`, then `nnet3-init 1.raw next.config 2.raw`, ...:
    each (source, text) config added in turn to the network so far, one random generator for all;
    `matrix_fields` replaces FixedAffineComponent matrix files (`replace_matrix_files`)."""
    rng = np.random.default_rng(seed)
    nnet = existing
    for source, text in configs:
        text = "\n".join(replace_matrix_files(text.splitlines(), matrix_fields))
        nnet = Nnet.from_config(text, source, rng=rng, existing=nnet)
    return nnet


def xconfig_context(xconfig_text: str, source: str, num_pdfs: int | None = None) -> tuple[int, int]:
    """`model_left_context`/`model_right_context` as `xconfig_to_configs.py` writes to `vars`
    (from ref.config, whose fixed-affine layers need no matrix file)."""
    return model_context(build_nnet(xconfig_text, source, num_pdfs, which="ref"))


def init_checkpoint(xconfig_path: str, lda_mat: str | None = None, seed: int = 0, num_pdfs: int | None = None,
                    trans_model_path: str | None = None) -> Checkpoint:
    with open(xconfig_path) as f:
        xconfig_text = f.read()
    trans_model = read_transition_model(trans_model_path) if trans_model_path else None
    if num_pdfs is None and trans_model is not None:
        num_pdfs = trans_model.num_pdfs
    nnet = build_nnet(xconfig_text, xconfig_path, num_pdfs, lda_mat, seed)
    model = Nnet3Model(nnet, trans_model)
    model.check()
    return Checkpoint(model, xconfig=xconfig_text)
