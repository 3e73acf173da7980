"""GMM acoustic model files: `final.mdl` = TransitionModel + AmDiagGmm in Kaldi's format.

Layout (Kaldi `src/gmm/am-diag-gmm.cc` and `src/gmm/diag-gmm.cc`, Write/Read):
    "<DIMENSION> " int32  "<NUMPDFS> " int32
    per pdf: "<DiagGMM> " ["\\n" in text]
             "<GCONSTS> " FV  "<WEIGHTS> " FV  "<MEANS_INVVARS> " FM  "<INV_VARS> " FM
             "</DiagGMM> " ["\\n" in text]
All values are float32 (BaseFloat); gconsts must be current when written.
"""
from __future__ import annotations

from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import numpy as np

from ..atomic import write_bytes
from ..kaldi.binary import KaldiFormatError, KaldiReader, KaldiWriter
from ..kaldi.transition import TransitionModel
from .hmm import from_khg, read_tree, to_khg


def write_am_diag_gmm(w: KaldiWriter, am: khg.AmDiagGmm) -> None:
    w.token("<DIMENSION>")
    w.int32(am.dim)
    w.token("<NUMPDFS>")
    w.int32(am.num_pdfs)
    for pdf in range(am.num_pdfs):
        gmm = am.get_pdf(pdf)
        if not gmm.valid_gconsts:
            gmm.compute_gconsts()
        w.token("<DiagGMM>")
        w.newline()
        w.token("<GCONSTS>")
        w.vector(np.asarray(gmm.gconsts, np.float32))
        w.token("<WEIGHTS>")
        w.vector(np.asarray(gmm.weights, np.float32))
        w.token("<MEANS_INVVARS>")
        w.matrix(np.asarray(gmm.means_invvars, np.float32))
        w.token("<INV_VARS>")
        w.matrix(np.asarray(gmm.inv_vars, np.float32))
        w.token("</DiagGMM>")
        w.newline()


def read_am_diag_gmm(r: KaldiReader) -> khg.AmDiagGmm:
    r.expect_token("<DIMENSION>")
    dim = r.read_int32()
    r.expect_token("<NUMPDFS>")
    num_pdfs = r.read_int32()
    if num_pdfs <= 0 or dim <= 0:
        raise r.error(f"bad GMM model header: dim {dim}, {num_pdfs} pdfs")
    am = khg.AmDiagGmm()
    for pdf in range(num_pdfs):
        tok = r.read_token()
        if tok not in ("<DiagGMM>", "<DiagGMMBegin>"):
            raise r.error(f"pdf {pdf}: expected <DiagGMM>, got {tok!r}")
        fields = {}
        while (tok := r.read_token()) not in ("</DiagGMM>", "<DiagGMMEnd>"):
            if tok in ("<GCONSTS>", "<WEIGHTS>"):
                fields[tok] = r.read_vector()
            elif tok in ("<MEANS_INVVARS>", "<INV_VARS>"):
                fields[tok] = r.read_matrix()
            else:
                raise r.error(f"pdf {pdf}: unexpected token {tok!r} in a DiagGMM")
        missing = {"<WEIGHTS>", "<MEANS_INVVARS>", "<INV_VARS>"} - fields.keys()
        if missing:
            raise r.error(f"pdf {pdf}: DiagGMM lacks {sorted(missing)}")
        inv_vars, means_invvars = fields["<INV_VARS>"], fields["<MEANS_INVVARS>"]
        if inv_vars.shape != means_invvars.shape or inv_vars.shape[1] != dim:
            raise r.error(f"pdf {pdf}: parameter shapes {inv_vars.shape} / {means_invvars.shape} "
                          f"do not match dim {dim}")
        weights = fields["<WEIGHTS>"]
        if weights.shape != (inv_vars.shape[0],):
            raise r.error(f"pdf {pdf}: {weights.size} weights for {inv_vars.shape[0]} Gaussians")
        # khg's pickle state is (weights, inv_vars, means_invvars): it takes the stored
        # parameters exactly (set_invvars_and_means would round means_invvars through the means)
        # and recomputes the gconsts, as Kaldi's DiagGmm::Read does
        gmm = khg.DiagGmm.__new__(khg.DiagGmm)
        gmm.__setstate__((weights, inv_vars, means_invvars))
        am.add_pdf(gmm)
    return am


@dataclass
class GmmModel:
    """A Kaldi GMM system in khg objects: transition model, GMMs and the tree."""
    khg_trans_model: khg.TransitionModel
    am: khg.AmDiagGmm
    tree: khg.ContextDependency

    @property
    def trans_model(self) -> TransitionModel:
        """The current transition model in our byte-exact Kaldi form."""
        return from_khg(self.khg_trans_model)

    def to_bytes(self, binary: bool = True) -> bytes:
        w = KaldiWriter(binary)
        w.header()
        self.trans_model.write(w)
        write_am_diag_gmm(w, self.am)
        return w.getvalue()

    def write(self, path: str, binary: bool = True) -> None:
        write_bytes(path, self.to_bytes(binary))

    @classmethod
    def read(cls, path: str, tree_path: str) -> GmmModel:
        r = KaldiReader.open(path)
        tm = TransitionModel.read(r)
        am = read_am_diag_gmm(r)
        if am.num_pdfs != tm.num_pdfs:
            raise KaldiFormatError(f"{path}: {am.num_pdfs} GMMs but the transition model has {tm.num_pdfs} pdfs")
        tree = read_tree(tree_path)
        return cls(to_khg(tm, tree, source=path), am, tree)
