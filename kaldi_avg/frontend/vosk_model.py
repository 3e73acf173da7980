"""vosk model directories ("V2" layout of vosk 0.3.45) and decoding with vosk.

vosk embeds Kaldi's online2 nnet3 decoder, so decoding through it is an independent check, by
real Kaldi code, of an exported `final.mdl` (TransitionModel + AmNnetSimple with priors) and of
our HCLG.  Layout written (toolchain.md 6):
    am/final.mdl                  the nnet3 acoustic model
    conf/model.conf               decoder, endpoint and looped-nnet options
    conf/mfcc.conf                the feature options the network was trained with
    graph/HCLG.fst                const FST
    graph/words.txt, graph/phones.txt, graph/phones/word_boundary.int (if the graph dir has it)
vosk's online pipeline gives the network raw MFCCs (no deltas, no speaker CMVN): the model's
input must be what mfcc.conf produces, with any context done inside the network.
"""
from __future__ import annotations

import json
import os
import shutil
import wave
from dataclasses import dataclass

from .atomic import write_lines


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


class VoskModelError(ValueError):
    """A file the vosk model needs is missing; names it."""


def _need(path: str) -> str:
    if not os.path.isfile(path):
        raise VoskModelError(f"vosk model: expected {path} to exist")
    return path


def make_vosk_model(model: str, graph_dir: str, mfcc_conf: str, out_dir: str,
                    opts: VoskOptions = VoskOptions()) -> None:
    """Writes a vosk model dir from an nnet3 `final.mdl`, a graph dir (const HCLG.fst, words.txt,
    phones/silence.csl) and the mfcc.conf of the features the model was trained on."""
    silence_csl = open(_need(os.path.join(graph_dir, "phones", "silence.csl")), encoding="utf-8").read().strip()
    if not silence_csl:
        raise VoskModelError(f"{graph_dir}/phones/silence.csl is empty (vosk's endpointing needs silence phones)")
    for sub in ("am", "conf", "graph/phones"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    shutil.copyfile(_need(model), os.path.join(out_dir, "am", "final.mdl"))
    shutil.copyfile(_need(mfcc_conf), os.path.join(out_dir, "conf", "mfcc.conf"))
    shutil.copyfile(_need(os.path.join(graph_dir, "HCLG.fst")), os.path.join(out_dir, "graph", "HCLG.fst"))
    shutil.copyfile(_need(os.path.join(graph_dir, "words.txt")), os.path.join(out_dir, "graph", "words.txt"))
    for name in ("phones.txt", "phones/word_boundary.int"):
        if os.path.isfile(os.path.join(graph_dir, name)):
            shutil.copyfile(os.path.join(graph_dir, name), os.path.join(out_dir, "graph", name))
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


def decode_with_vosk(model_dir: str, wav_paths: list[str]) -> list[str]:
    """vosk's final result text for each 16-bit mono WAV file, in order."""
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
        rec.AcceptWaveform(data)
        out.append(json.loads(rec.FinalResult()).get("text", ""))
    return out
