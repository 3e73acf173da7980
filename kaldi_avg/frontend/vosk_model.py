"""vosk model directories ("V2" layout of vosk 0.3.45) and decoding with vosk.

vosk embeds Kaldi's online2 nnet3 decoder, so decoding through it is an independent check, by
real Kaldi code, of an exported `final.mdl` (TransitionModel + AmNnetSimple with priors) and of
our HCLG.  Layout written (docs/dependencies.md 4):
    am/final.mdl                  the nnet3 acoustic model
    conf/model.conf               decoder, endpoint and looped-nnet options
    conf/mfcc.conf                the feature options the network was trained with
    graph/HCLG.fst                const FST
    graph/words.txt, graph/phones.txt, graph/phones/word_boundary.int (if the graph dir has it)
vosk's online pipeline gives the network raw MFCCs (no deltas, no speaker CMVN): the model's
input must be what mfcc.conf produces, with any context done inside the network. A model trained
with per-speaker CMVN can still be checked on a one-speaker test set: `fold_cmvn_from` folds that
speaker's CMVN (with the model's cmvn_opts) into the network's input affine layer
(kaldi_avg.kaldi.nnet3.fold), so that vosk computes what our decoder computes on normalized
features.

A chain model (docs/kaldi-formats.md 7.1-7.2: empty priors in final.mdl, or a
`frame_subsampling_factor` file beside it) gets what vosk's own chain models have in model.conf:
`--acoustic-scale=1.0` and `--frame-subsampling-factor=<the file's factor, else 1>`; a
cross-entropy model `--acoustic-scale=0.1 --frame-subsampling-factor=1`.

vosk scales the graph costs of its final lattice by 0.9 before choosing the result (and by
default picks it by MBR).  `decode_with_vosk` asks for the n-best list, whose first entry is the
Viterbi best path of that lattice: the best path of our lattices at LM weight
0.9 * post-decode-acwt / acoustic scale, 9 for both a cross-entropy model (0.1, 1.0) and a chain
model decoded as chain recipes do (acwt 1.0, post-decode-acwt 10), i.e.
`scoring_kaldi/penalty_0.0/9.txt` of a scored decode dir.
"""
from __future__ import annotations

import json
import os
import sys
import wave
from dataclasses import dataclass

from ..atomic import copy_file, write_lines, write_text
from ..kaldi.cmvn import CmvnApplier, cmvn_transform
from ..kaldi.datadir import DataDir
from ..kaldi.nnet3.am import read_nnet3_file
from ..kaldi.nnet3.fold import fold_input_transform
from ..options import KaldiArgumentParser
from .cliopts import parse_kaldi_args
from .score import compute_wer, read_transcripts

VOSK_GRAPH_SCALE = 0.9  # vosk's recognizer.cc: ScaleLattice(GraphLatticeScale(0.9)) on the final lattice


CHAIN_ACOUSTIC_SCALE = 1.0  # what vosk's chain models and chain decoding (--acwt 1.0) use


def vosk_lm_weight(acoustic_scale: float, post_decode_acwt: float = 1.0) -> float:
    """The LM weight at which our lattices' best path is vosk's (graph 0.9, acoustic
    `acoustic_scale`), the lattices' acoustic costs scaled by `post_decode_acwt` (decode.sh)."""
    return VOSK_GRAPH_SCALE * post_decode_acwt / acoustic_scale


@dataclass(frozen=True)
class VoskOptions:
    """What goes into conf/model.conf (vosk's defaults differ from Kaldi's decode.sh)."""
    acoustic_scale: float = 0.1
    frame_subsampling_factor: int = 1
    beam: float = 13.0
    max_active: int = 7000
    min_active: int = 200
    lattice_beam: float = 6.0
    frames_per_chunk: int = 50

    @classmethod
    def for_model(cls, model: str, **overrides) -> VoskOptions:
        """The options for `model` (a final.mdl): a chain model's acoustic scale 1.0 and its frame
        subsampling factor (`chain_model`), else the defaults; then `overrides` (None: not given)."""
        chain, subsampling = chain_model(model)
        base = {"acoustic_scale": CHAIN_ACOUSTIC_SCALE, "frame_subsampling_factor": subsampling} if chain else {}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def chain_model(model: str) -> tuple[bool, int]:
    """(is it a chain model, its frame subsampling factor) for a final.mdl: chain when its priors
    are empty or its directory has a `frame_subsampling_factor` file (or init/info.txt line, as
    steps/nnet3/decode.sh reads them); the factor is that file's, else 1."""
    from .decode_steps import DecodeError, frame_subsampling_factor  # the decoder's own reading of it

    try:
        subsampling = frame_subsampling_factor(os.path.dirname(os.path.abspath(model)))
    except DecodeError as e:
        raise VoskModelError(str(e)) from None
    am = read_nnet3_file(_need(model))
    if not am.is_am:
        raise VoskModelError(f"{model}: a raw nnet; vosk needs an acoustic model (final.mdl)")
    return am.priors is None or subsampling is not None, subsampling or 1


class VoskModelError(ValueError):
    """A file the vosk model needs is missing; names it."""


def _need(path: str) -> str:
    if not os.path.isfile(path):
        raise VoskModelError(f"vosk model: expected {path} to exist")
    return path


def make_vosk_model(model: str, graph_dir: str, mfcc_conf: str, out_dir: str,
                    opts: VoskOptions | None = None, fold_cmvn_from: str | None = None) -> None:
    """Writes a vosk model dir from an nnet3 `final.mdl` (or the experiment dir holding it), a
    graph dir (const HCLG.fst, words.txt, phones/silence.csl) and the mfcc.conf of the features
    the model was trained on; with `fold_cmvn_from` (a one-speaker data dir), that speaker's CMVN
    folded into the network. `opts` None: `VoskOptions.for_model` (a chain model detected)."""
    if os.path.isdir(model):
        model = os.path.join(model, "final.mdl")
    if opts is None:
        opts = VoskOptions.for_model(model)
    silence_csl = open(_need(os.path.join(graph_dir, "phones", "silence.csl")), encoding="utf-8").read().strip()
    if not silence_csl:
        raise VoskModelError(f"{graph_dir}/phones/silence.csl is empty (vosk's endpointing needs silence phones)")
    for sub in ("am", "conf", "graph/phones"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    if fold_cmvn_from is None:
        copy_file(_need(model), os.path.join(out_dir, "am", "final.mdl"))
    else:
        folded_cmvn_model(_need(model), fold_cmvn_from).write(os.path.join(out_dir, "am", "final.mdl"))
    copy_file(_need(mfcc_conf), os.path.join(out_dir, "conf", "mfcc.conf"))
    copy_file(_need(os.path.join(graph_dir, "HCLG.fst")), os.path.join(out_dir, "graph", "HCLG.fst"))
    copy_file(_need(os.path.join(graph_dir, "words.txt")), os.path.join(out_dir, "graph", "words.txt"))
    for name in ("phones.txt", "phones/word_boundary.int"):
        if os.path.isfile(os.path.join(graph_dir, name)):
            copy_file(os.path.join(graph_dir, name), os.path.join(out_dir, "graph", name))
    write_lines(os.path.join(out_dir, "conf", "model.conf"), [
        f"--frame-subsampling-factor={opts.frame_subsampling_factor}",
        f"--acoustic-scale={opts.acoustic_scale}",
        f"--frames-per-chunk={opts.frames_per_chunk}",
        f"--beam={opts.beam}",
        f"--max-active={opts.max_active}",
        f"--min-active={opts.min_active}",
        f"--lattice-beam={opts.lattice_beam}",
        f"--endpoint.silence-phones={silence_csl}",
    ])


def folded_cmvn_model(model: str, data_dir: str):
    """`model` (a final.mdl next to its cmvn_opts) with the CMVN of `data_dir`'s only speaker
    folded into its input layer."""
    cmvn_opts = os.path.join(os.path.dirname(model), "cmvn_opts")
    applier = CmvnApplier(data_dir, open(_need(cmvn_opts), encoding="utf-8").read().strip())
    if not applier.opts.norm_means:
        raise VoskModelError(f"{cmvn_opts}: the model was trained without CMVN; there is nothing to fold")
    speakers = list(applier.data.spk2utt)
    if len(speakers) != 1 or not applier.per_speaker:
        raise VoskModelError(f"{data_dir}: folding CMVN into a model needs one speaker with per-speaker stats "
                             f"(has {len(speakers)} speakers)")
    offset, scale = cmvn_transform(applier.data.cmvn[speakers[0]], applier.opts.norm_vars)
    am = read_nnet3_file(model)
    fold_input_transform(am.nnet, offset, scale)
    return am


def decode_with_vosk(model_dir: str, wav_paths: list[str]) -> list[str]:
    """vosk's best path (the first of its n-best list, see above) for each 16-bit mono WAV file."""
    import vosk  # loads libvosk (Kaldi); only needed here

    vosk.SetLogLevel(-1)
    model = vosk.Model(model_dir)
    out = []
    for path in wav_paths:
        with wave.open(path, "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(f"{path}: vosk needs 16-bit mono audio")
            rate, data = w.getframerate(), w.readframes(w.getnframes())
        rec = vosk.KaldiRecognizer(model, rate)
        rec.SetMaxAlternatives(1)
        rec.AcceptWaveform(data)
        alternatives = json.loads(rec.FinalResult()).get("alternatives", [])
        out.append(alternatives[0]["text"] if alternatives else "")
    return out


def _acoustic_scale(model_dir: str) -> float:
    with open(_need(os.path.join(model_dir, "conf", "model.conf")), encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("--acoustic-scale="):
                return float(line.strip().split("=", 1)[1])
    return 0.1  # NnetSimpleLoopedComputationOptions' default


def vosk_check(model_dir: str, data_dir: str, out_dir: str, compare_with: str | None = None,
               min_agreement: float = 0.95, post_decode_acwt: float = 1.0) -> tuple[float, int, int]:
    """Decodes `data_dir`'s recordings with vosk into `out_dir` (hyp.txt, wer).  With
    `compare_with`, a scored decode dir of the same model and graph (decoded with
    --post-decode-acwt `post_decode_acwt`), its best paths at vosk's
    scales (scoring_kaldi/penalty_0.0/<LM weight>.txt) are compared with vosk's, and the
    utterances that differ are listed in compare.txt.  Returns (WER, identical, compared);
    raises VoskModelError when fewer than `min_agreement` of them are identical."""
    data = DataDir(data_dir)
    if data.wav_scp is None or data.text is None:
        raise VoskModelError(f"{data_dir}: needs wav.scp and text")
    pipes = [u for u, w in data.wav_scp.items() if w.rstrip().endswith("|")]
    if pipes:
        raise VoskModelError(f"{data.file('wav.scp')}: utterance {pipes[0]!r} is a pipe; vosk needs WAV files")
    utts = sorted(data.wav_scp)
    texts = decode_with_vosk(model_dir, [data.wav_scp[u] for u in utts])
    hyps = {u: t.split() for u, t in zip(utts, texts)}
    write_lines(os.path.join(out_dir, "hyp.txt"), [f"{u} {' '.join(w)}".rstrip() for u, w in hyps.items()])
    result = compute_wer({u: t.split() for u, t in data.text.items()}, hyps)
    write_text(os.path.join(out_dir, "wer"), result.report())
    if compare_with is None:
        return result.wer, 0, 0
    lmwt = vosk_lm_weight(_acoustic_scale(model_dir), post_decode_acwt)
    if abs(lmwt - round(lmwt)) > 1e-6:
        raise VoskModelError(f"vosk's scales give LM weight {lmwt:g}, which scoring does not produce (use an "
                             f"acoustic scale that divides 0.9 * post-decode-acwt)")
    ours_path = os.path.join(compare_with, "scoring_kaldi", "penalty_0.0", f"{round(lmwt)}.txt")
    if not os.path.isfile(ours_path):
        raise VoskModelError(f"{ours_path}: missing (score {compare_with} with LM weight {round(lmwt)} and "
                             f"penalty 0.0, e.g. local/score.sh's defaults)")
    ours = read_transcripts(ours_path)
    # Near ties (our best path changes at the next LM weight) may go either way in vosk's lattice
    # rescoring; they are listed, not compared.
    neighbour_path = os.path.join(compare_with, "scoring_kaldi", "penalty_0.0", f"{round(lmwt) + 1}.txt")
    neighbour = read_transcripts(neighbour_path) if os.path.isfile(neighbour_path) else ours
    ties = [u for u in utts if u in ours and ours[u] != neighbour.get(u)]
    common = [u for u in utts if u in ours and u not in ties]
    differ = [u for u in common if ours[u] != hyps[u]]
    write_lines(os.path.join(out_dir, "compare.txt"),
                [f"{u} vosk: {' '.join(hyps[u])} | ours: {' '.join(ours[u])}" for u in differ]
                + [f"{u} near tie (not compared) vosk: {' '.join(hyps[u])} | ours: {' '.join(ours[u])}"
                   for u in ties])
    identical = len(common) - len(differ)
    if not common or identical < min_agreement * len(common):
        raise VoskModelError(f"vosk and {compare_with} agree on {identical} of {len(common)} utterances "
                             f"(need {min_agreement:.0%}); see {out_dir}/compare.txt")
    return result.wer, identical, len(common)


def _make(argv: list[str]) -> None:
    p = KaldiArgumentParser(prog="vosk_model make",
                            usage="python -m kaldi_avg.frontend.vosk_model make --mfcc-config=<conf> "
                                  "[--fold-cmvn-from=<data-dir>] <final.mdl|nnet-dir> <graph-dir> <vosk-model-dir>",
                            description="Writes a vosk (V2 layout) model dir.")
    d = VoskOptions()
    p.add_argument("--mfcc-config", required=True)
    p.add_argument("--acoustic-scale", type=float, default=None,
                   help=f"default: {CHAIN_ACOUSTIC_SCALE} for a chain model, else {d.acoustic_scale}")
    p.add_argument("--frame-subsampling-factor", type=int, default=None,
                   help="default: the frame_subsampling_factor file beside the model, else 1")
    p.add_argument("--beam", type=float, default=d.beam)
    p.add_argument("--max-active", type=int, default=d.max_active)
    p.add_argument("--lattice-beam", type=float, default=d.lattice_beam)
    p.add_argument("--frames-per-chunk", type=int, default=d.frames_per_chunk)
    p.add_argument("--fold-cmvn-from", default=None,
                   help="one-speaker data dir whose CMVN (with the model's cmvn_opts) is folded into the network")
    p.add_argument("model")
    p.add_argument("graph_dir")
    p.add_argument("out_dir")
    a = parse_kaldi_args(p, argv)
    model = os.path.join(a.model, "final.mdl") if os.path.isdir(a.model) else a.model
    opts = VoskOptions.for_model(model, acoustic_scale=a.acoustic_scale,
                                 frame_subsampling_factor=a.frame_subsampling_factor, beam=a.beam,
                                 max_active=a.max_active, lattice_beam=a.lattice_beam,
                                 frames_per_chunk=a.frames_per_chunk)
    make_vosk_model(model, a.graph_dir, a.mfcc_config, a.out_dir, opts, a.fold_cmvn_from)


def _is_chain(argv: list[str]) -> None:
    p = KaldiArgumentParser(prog="vosk_model is-chain",
                            usage="python -m kaldi_avg.frontend.vosk_model is-chain <final.mdl|nnet-dir>",
                            description="Prints true for a chain model (empty priors, or a frame_subsampling_factor "
                                        "file beside it), else false.")
    p.add_argument("model")
    a = parse_kaldi_args(p, argv)
    model = os.path.join(a.model, "final.mdl") if os.path.isdir(a.model) else a.model
    print("true" if chain_model(model)[0] else "false")


def _decode(argv: list[str]) -> None:
    p = KaldiArgumentParser(prog="vosk_model decode",
                            usage="python -m kaldi_avg.frontend.vosk_model decode [--compare-with=<decode-dir>] "
                                  "[--min-agreement=0.95] <vosk-model-dir> <data-dir> <out-dir>",
                            description="Decodes a data dir's recordings with vosk, scores them and compares "
                                        "them with a decode dir's hyp.txt.")
    p.add_argument("--compare-with", default=None)
    p.add_argument("--min-agreement", type=float, default=0.95)
    p.add_argument("--post-decode-acwt", type=float, default=1.0,
                   help="the --post-decode-acwt the decode dir was made with (chain: 10.0)")
    p.add_argument("model_dir")
    p.add_argument("data_dir")
    p.add_argument("out_dir")
    a = parse_kaldi_args(p, argv)
    wer, identical, compared = vosk_check(a.model_dir, a.data_dir, a.out_dir, a.compare_with, a.min_agreement,
                                          a.post_decode_acwt)
    agreement = f", identical to {a.compare_with} on {identical}/{compared}" if a.compare_with else ""
    print(f"vosk: %WER {wer:.2f}{agreement} ({a.out_dir}/wer)", file=sys.stderr)
    if identical < compared:
        print(f"WARNING: vosk and {a.compare_with} differ on {compared - identical} utterance(s) outside the near "
              f"ties (listed in {a.out_dir}/compare.txt)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"make": _make, "decode": _decode, "is-chain": _is_chain}
    if not argv or argv[0] not in commands:
        print("usage: python -m kaldi_avg.frontend.vosk_model (make|decode|is-chain) [options] ...", file=sys.stderr)
        return 1
    try:
        commands[argv[0]](argv[1:])
    except (VoskModelError, OSError, ValueError) as e:
        print(f"vosk_model {argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
