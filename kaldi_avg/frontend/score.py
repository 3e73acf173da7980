"""Word error rates in Kaldi's formats: `compute-wer --text --mode=present` and
`steps/score_kaldi.sh` (what most recipes' `local/score.sh` is).

score_kaldi: for every word insertion penalty and LM weight, the best path of each lattice
(`lattice.best_paths`) is written to `scoring_kaldi/penalty_<wip>/<lmwt>.txt`, scored into
`wer_<lmwt>_<wip>`, and the best of them goes to `scoring_kaldi/best_wer` as
`%WER 9.20 [ 46 / 500, 3 ins, 10 del, 33 sub ] <decode-dir>/wer_<lmwt>_<wip>`.
"""
from __future__ import annotations

import glob
import os
import re
import sys
from dataclasses import dataclass

import kaldialign

from ..atomic import write_lines, write_text
from ..kaldi.datadir import DataDir
from ..options import KaldiArgumentParser
from .cliopts import parse_kaldi_args
from .lang import LangError, read_symbol_table
from .lattice import LatticeError, best_paths, read_lattice_archive


@dataclass(frozen=True)
class WerResult:
    errors: int
    words: int
    ins: int
    dels: int
    subs: int
    sentence_errors: int
    sentences: int
    absent: int          # reference utterances with no hypothesis (not scored, --mode=present)

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / self.words if self.words else 0.0

    @property
    def ser(self) -> float:
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else 0.0

    def wer_line(self) -> str:
        partial = " [PARTIAL]" if self.absent else ""
        return (f"%WER {self.wer:.2f} [ {self.errors} / {self.words}, {self.ins} ins, {self.dels} del, "
                f"{self.subs} sub ]{partial}")

    def report(self) -> str:
        """compute-wer's output."""
        return (f"{self.wer_line()}\n%SER {self.ser:.2f} [ {self.sentence_errors} / {self.sentences} ]\n"
                f"Scored {self.sentences} sentences, {self.absent} not present in hyp.\n")


def compute_wer(refs: dict[str, list[str]], hyps: dict[str, list[str]]) -> WerResult:
    """compute-wer --mode=present: utterances without a hypothesis are counted, not scored."""
    errors = words = ins = dels = subs = sent_err = sents = absent = 0
    for utt, ref in refs.items():
        if utt not in hyps:
            absent += 1
            continue
        d = kaldialign.edit_distance(ref, hyps[utt])
        errors += d["total"]
        ins, dels, subs = ins + d["ins"], dels + d["del"], subs + d["sub"]
        words += len(ref)
        sents += 1
        sent_err += d["total"] > 0
    return WerResult(errors, words, ins, dels, subs, sent_err, sents, absent)


def read_transcripts(path: str) -> dict[str, list[str]]:
    """`utt w1 w2 ...` lines (a data dir's text, or a hypothesis file)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts:
                out[parts[0]] = parts[1:]
    return out


def _format_number(x: float) -> str:
    """Penalties as the shell writes them in file names (0.0, 0.5, 1.0)."""
    return f"{x:.1f}" if float(x).is_integer() else f"{x:g}"


def score_kaldi(data_dir: str, graph_dir: str, decode_dir: str, min_lmwt: int = 7, max_lmwt: int = 17,
                word_ins_penalties: tuple[float, ...] = (0.0, 0.5, 1.0)) -> tuple[WerResult, int, float]:
    """steps/score_kaldi.sh; returns (best result, its LM weight, its penalty)."""
    data = DataDir(data_dir)
    if data.text is None:
        raise LangError(f"{data.file('text')}: missing (no reference to score against)")
    words = {i: w for w, i in read_symbol_table(os.path.join(graph_dir, "words.txt")).items()}
    lat_files = sorted(glob.glob(os.path.join(decode_dir, "lat.*.gz")),
                       key=lambda p: int(re.findall(r"lat\.(\d+)\.gz$", p)[0]))
    if not lat_files:
        raise LatticeError(f"{decode_dir}: no lat.*.gz to score")
    lm_weights = list(range(min_lmwt, max_lmwt + 1))
    hyps: dict[tuple[int, float], dict[str, list[str]]] = {}
    for path in lat_files:
        for utt, lat in read_lattice_archive(path):
            for pair, ids in best_paths(lat, lm_weights, list(word_ins_penalties), f"{path}: {utt}").items():
                hyps.setdefault(pair, {})[utt] = [words.get(i, f"<unknown-{i}>") for i in ids]
    scoring = os.path.join(decode_dir, "scoring_kaldi")
    refs = {u: t.split() for u, t in data.text.items()}
    write_lines(os.path.join(scoring, "test_filt.txt"), [f"{u} {' '.join(w)}".rstrip() for u, w in refs.items()])
    best = None
    for wip in word_ins_penalties:
        for lmwt in lm_weights:
            h = hyps.get((lmwt, wip), {})
            write_lines(os.path.join(scoring, f"penalty_{_format_number(wip)}", f"{lmwt}.txt"),
                        [f"{u} {' '.join(w)}".rstrip() for u, w in sorted(h.items())])
            result = compute_wer(refs, h)
            name = os.path.join(decode_dir, f"wer_{lmwt}_{_format_number(wip)}")
            write_text(name, result.report())
            if best is None or result.wer < best[0].wer:
                best = (result, lmwt, wip, name)
    result, lmwt, wip, name = best
    write_lines(os.path.join(scoring, "best_wer"), [f"{result.wer_line()} {name}"])
    write_lines(os.path.join(scoring, "wer_details", "lmwt"), [str(lmwt)])
    write_lines(os.path.join(scoring, "wer_details", "wip"), [_format_number(wip)])
    return result, lmwt, wip


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="local/score.sh",
                            usage="local/score.sh [--cmd (run.pl|queue.pl...)] [--min-lmwt 7] [--max-lmwt 17] "
                                  "[--word-ins-penalty 0.0,0.5,1.0] <data-dir> <lang-dir|graph-dir> <decode-dir>",
                            description="Scores lat.*.gz against <data-dir>/text as steps/score_kaldi.sh.")
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; scoring runs in-process")
    p.add_argument("--stage", type=int, default=0)
    p.add_argument("--decode-mbr", default="false", help="accepted for compatibility; MBR is not done")
    p.add_argument("--min-lmwt", type=int, default=7)
    p.add_argument("--max-lmwt", type=int, default=17)
    p.add_argument("--word-ins-penalty", default="0.0,0.5,1.0")
    p.add_argument("data_dir")
    p.add_argument("graph_dir")
    p.add_argument("decode_dir")
    a = parse_kaldi_args(p, argv)
    try:
        penalties = tuple(float(x) for x in a.word_ins_penalty.split(","))
        result, lmwt, wip = score_kaldi(a.data_dir, a.graph_dir, a.decode_dir, a.min_lmwt, a.max_lmwt, penalties)
    except (LangError, LatticeError, OSError, ValueError) as e:
        print(f"local/score.sh: {e}", file=sys.stderr)
        return 1
    print(f"{result.wer_line()} {os.path.join(a.decode_dir, f'wer_{lmwt}_{_format_number(wip)}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
