"""Decoding with an HCLG graph, as Kaldi's latgen-faster programs do.

Every acoustic model reaches the decoder as a (T, num_pdfs) matrix of log-likelihoods:
  * a GMM (steps/decode.sh): the log-likelihood of each frame under each pdf's GMM, which is
    what gmm-latgen-faster's DecodableAmDiagGmmScaled computes;
  * a network (steps/nnet3/decode.sh): log-softmax minus log priors from `kaldi-avg compute
    --use-priors=true`, which is what nnet3-latgen-faster's DecodableAmNnetSimple computes.
The matrix is scaled by the acoustic scale and expanded to transition-id columns (pdf of each
transition-id), like latgen-faster-mapped.  The 1-best comes from khg's LatticeFasterDecoder
(Kaldi's, with --beam / --max-active / --min-active / --lattice-beam); lattices (for scoring)
come from kaldi-decoder's LatticeSimpleDecoder with the same beam and lattice beam (khg binds no
lattice output of LatticeFasterDecoder).  The simple decoder prunes differently and can lose the
path the faster one keeps (a chain model's sharp acoustic costs: FSDD's lucas-4-19 lost "four"
at beam 15, which Kaldi's nnet3-latgen-faster lattice holds), so its beam is doubled, up to
`MAX_BEAM_DOUBLINGS` times, until its best path has the 1-best's words; Kaldi's lattices always
hold the decoder's best path.  They are
raw state-level lattices, acoustic costs unscaled as latgen writes them, stored as Kaldi text
lattice archives (`lat.JOB.gz`), which Kaldi's lattice tools read. A decoder made with
`post_decode_acwt` != 1 writes them as `lattice-scale --acoustic-scale=<post_decode_acwt>` would
leave them (steps/nnet3/decode.sh's --post-decode-acwt, 10 for chain models: docs/kaldi-formats.md 7.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import kaldi_decoder
import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

MAX_BEAM_DOUBLINGS = 3   # the lattice search's beam goes up to 8 x --beam


@dataclass(frozen=True)
class DecodeOptions:
    """The decoder options of nnet3-latgen-faster / gmm-latgen-faster."""
    acoustic_scale: float = 0.1
    beam: float = 15.0
    lattice_beam: float = 8.0
    max_active: int = 7000
    min_active: int = 200
    allow_partial: bool = True


@dataclass
class Hypothesis:
    utt: str
    word_ids: list[int]
    num_frames: int
    log_like: float        # the decoder's total (scaled) log-likelihood of the best path
    partial: bool          # no final state was reached (output allowed by allow_partial)
    lattice_beam_search: float = 0.0   # the lattice search's beam, when wider than --beam


def gmm_log_likelihoods(am: khg.AmDiagGmm, feats: np.ndarray) -> np.ndarray:
    """(T, num_pdfs): log p(x_t | pdf) under each pdf's GMM (DecodableAmDiagGmm, unscaled)."""
    x = np.ascontiguousarray(feats, np.float32)
    out = np.empty((x.shape[0], am.num_pdfs), np.float32)
    for pdf in range(am.num_pdfs):
        comp = np.asarray(am.get_pdf(pdf).log_likelihoods_matrix(x), np.float64)
        top = comp.max(axis=1)
        out[:, pdf] = top + np.log(np.exp(comp - top[:, None]).sum(axis=1))
    return out


class MappedDecoder:
    """latgen-faster-mapped: decodes (T, num_pdfs) log-likelihood matrices with one graph;
    `post_decode_acwt` scales the acoustic costs of the lattices it returns (lattice-scale)."""

    def __init__(self, graph, trans_model: khg.TransitionModel, opts: DecodeOptions = DecodeOptions(),
                 post_decode_acwt: float = 1.0):
        self.graph = graph
        self.trans_model = trans_model
        self.opts = opts
        self.post_decode_acwt = post_decode_acwt
        self.tid2pdf = np.asarray(trans_model.transition_id_to_pdf_array(), np.int64)
        self.num_pdfs = trans_model.num_pdfs
        config = khg.LatticeFasterDecoderConfig(beam=opts.beam, max_active=opts.max_active,
                                                min_active=opts.min_active, lattice_beam=opts.lattice_beam)
        self.decoder = khg.LatticeFasterDecoder(graph, config)
        self._lattice_decoders: dict[float, kaldi_decoder.LatticeSimpleDecoder] = {}
        self.lattice_decoder = self._lattice_decoder(opts.beam)   # the one that decoded last

    def _lattice_decoder(self, beam: float) -> kaldi_decoder.LatticeSimpleDecoder:
        if beam not in self._lattice_decoders:
            self._lattice_decoders[beam] = kaldi_decoder.LatticeSimpleDecoder(
                self.graph, kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=self.opts.lattice_beam))
        return self._lattice_decoders[beam]

    def _search_lattice(self, m: np.ndarray, words: list[int] | None) -> float:
        """Runs the lattice search, widening its beam until its best path has `words` (the
        1-best's; None: no 1-best to match); returns the beam it ended with."""
        for doubling in range(MAX_BEAM_DOUBLINGS + 1):
            beam = self.opts.beam * 2 ** doubling
            self.lattice_decoder = self._lattice_decoder(beam)
            self.lattice_decoder.decode(kaldi_decoder.DecodableCtc(m, 0))
            if words is None:
                break
            ok, best = self.lattice_decoder.get_best_path(True)
            if ok and list(kaldifst.get_linear_symbol_sequence(best)[2]) == words:
                break
        return beam

    def _scaled(self, utt: str, loglikes: np.ndarray) -> np.ndarray:
        if loglikes.ndim != 2 or loglikes.shape[1] != self.num_pdfs:
            raise ValueError(f"utterance {utt}: log-likelihoods have shape {loglikes.shape}, the model "
                             f"has {self.num_pdfs} pdfs")
        if not np.all(np.isfinite(loglikes)):
            raise ValueError(f"utterance {utt}: log-likelihoods contain inf or nan")
        return np.ascontiguousarray(self.opts.acoustic_scale * loglikes[:, self.tid2pdf[1:]], np.float32)

    def decode(self, utt: str, loglikes: np.ndarray) -> tuple[Hypothesis | None, str]:
        """(best path or None when decoding failed, raw lattice in Kaldi's text form or "")."""
        m = self._scaled(utt, loglikes)
        ok, _, words, like = khg.decode_utterance_lattice_faster(
            decoder=self.decoder, decodable=khg.DecodableCtc(m), trans_model=self.trans_model, utt=utt,
            allow_partial=self.opts.allow_partial)
        words = [int(w) for w in words] if ok else None
        beam = self._search_lattice(m, words)
        partial = not np.isfinite(self.lattice_decoder.final_relative_cost())
        hyp = Hypothesis(utt, words, m.shape[0], float(like), partial,
                         beam if beam > self.opts.beam else 0.0) if ok else None
        return hyp, self._lattice_text()

    def _lattice_text(self) -> str:
        """The raw lattice with acoustic costs unscaled (as latgen writes lattices), then times
        `post_decode_acwt` (as lattice-scale, a second scaling).  When no final state was reached
        every surviving token ends the lattice (Kaldi's GetRawLattice)."""
        ok, lat = self.lattice_decoder.get_raw_lattice(use_final_probs=True)
        if not ok or lat.num_states == 0:
            return ""
        kaldifst.scale_lattice(kaldifst.lattice_scale(1.0, 1.0 / self.opts.acoustic_scale), lat)
        if self.post_decode_acwt != 1.0:
            kaldifst.scale_lattice(kaldifst.lattice_scale(1.0, self.post_decode_acwt), lat)
        return "\n".join("\t".join(line.split()) for line in lat.to_str().splitlines() if line.strip())
