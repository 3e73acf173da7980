"""G.fst: from an ARPA language model (`utils/format_lm.sh`) or from a small grammar, written
into a copy of a lang dir as format_lm.sh does.

Grammars (acceptors over words.txt ids, proper probability distributions):
  one_word_grammar      exactly one word per utterance, uniform (FSDD);
  digit_string_grammar  min_len..max_len words, the length uniform, each word uniform.
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
import tempfile

import kaldifst

from ..atomic import atomic_path, copy_tree
from ..options import KaldiArgumentParser
from .cliopts import parse_kaldi_args
from .lang import Lang, LangError

SPECIAL_WORDS = ("<eps>", "#0", "<s>", "</s>")


def _check_words(words: list[str]) -> None:
    if not words:
        raise LangError("a grammar needs at least one word")
    if len(set(words)) != len(words):
        raise LangError(f"grammar words repeat: {words}")


def one_word_grammar(words: list[str]) -> str:
    """Exactly one of `words`, uniformly (OpenFst text with word symbols)."""
    _check_words(words)
    cost = math.log(len(words))
    return "".join(f"0 1 {w} {w} {cost!r}\n" for w in words) + "1\n"


def digit_string_grammar(words: list[str], min_len: int = 1, max_len: int = 7) -> str:
    """Strings of min_len..max_len words: the length uniform over that range, words uniform.
    State i = i words so far; stopping at i >= min_len has P(stop) = 1 / (max_len - i + 1)."""
    _check_words(words)
    if not 1 <= min_len <= max_len:
        raise LangError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    lines = []
    for i in range(max_len + 1):
        stop = 1.0 / (max_len - i + 1) if i >= min_len else 0.0
        if i < max_len:
            cost = -math.log((1.0 - stop) / len(words))
            lines += [f"{i} {i + 1} {w} {w} {cost!r}\n" for w in words]
        if stop > 0:
            lines.append(f"{i} {-math.log(stop)!r}\n")
    return "".join(lines)


def compile_grammar(text: str, words: dict[str, int]):
    """OpenFst text with word symbols -> an ilabel-sorted StdVectorFst over word ids."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if len(f) >= 4:
            for w in f[2:4]:
                if w not in words:
                    raise LangError(f"grammar line {n}: word {w!r} is not in words.txt")
            f[2], f[3] = str(words[f[2]]), str(words[f[3]])
        out.append(" ".join(f))
    G = kaldifst.compile("\n".join(out) + "\n")
    kaldifst.arcsort(G, sort_type="ilabel")
    return G


# kaldilm carries its own OpenFst: loaded in a process before kaldi_hmm_gmm, kaldifst,
# kaldi_decoder or vosk, it deadlocks their import (and after vosk it can crash at exit), so
# arpa2fst always runs in a child process.
_ARPA2FST = ("import sys, kaldilm; sys.stdout.write(kaldilm.arpa2fst(input_arpa=sys.argv[1], "
             "disambig_symbol='#0', read_symbol_table=sys.argv[2]))")


def arpa_grammar(arpa_path: str, words_txt: str):
    """arpa2fst --disambig-symbol=#0 --read-symbol-table=words.txt (as format_lm.sh); the ARPA
    file may be gzipped."""
    if not os.path.isfile(arpa_path):
        raise LangError(f"{arpa_path}: no such ARPA file")
    with tempfile.NamedTemporaryFile(suffix=".arpa") as plain:
        if arpa_path.endswith(".gz"):
            with gzip.open(arpa_path, "rb") as f:
                shutil.copyfileobj(f, plain)
            plain.flush()
        source = plain.name if arpa_path.endswith(".gz") else arpa_path
        proc = subprocess.run([sys.executable, "-c", _ARPA2FST, source, words_txt], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LangError(f"{arpa_path}: arpa2fst failed: {proc.stderr.strip()[-500:]}")
    if not proc.stdout.strip():
        raise LangError(f"{arpa_path}: arpa2fst produced an empty grammar (no n-grams over words.txt?)")
    G = kaldifst.compile(proc.stdout)
    kaldifst.arcsort(G, sort_type="ilabel")
    return G


def write_lang_with_grammar(lang_dir: str, G, out_dir: str) -> None:
    """A copy of `lang_dir` (without any old G.fst or tmp/) with `G` as G.fst."""
    if os.path.abspath(lang_dir) != os.path.abspath(out_dir):
        copy_tree(lang_dir, out_dir, skip=("G.fst", "tmp"))
    tmp_dir = os.path.join(out_dir, "tmp")
    if os.path.isdir(tmp_dir):
        shutil.rmtree(tmp_dir)  # cached LG/CLG from another G must not be reused
    with atomic_path(os.path.join(out_dir, "G.fst")) as tmp:
        if not G.write(tmp):
            raise OSError(f"{out_dir}/G.fst: could not write")


def speech_words(lang: Lang) -> list[str]:
    """The lexicon's words except special symbols, the OOV word and silence-only words."""
    silence = set(lang.ints("silence"))
    oov = lang.oov_id()
    speech = set()
    for row in (r for r in _align_lexicon(lang) if r):
        if row[0] != oov and any(p not in silence for p in row[2:]):
            speech.add(row[0])
    names = lang.id_to_word()
    return sorted((names[i] for i in speech if names.get(i) not in SPECIAL_WORDS), key=str.encode)


def _align_lexicon(lang: Lang) -> list[list[int]]:
    with open(lang.path("phones", "align_lexicon.int"), encoding="utf-8") as f:
        return [[int(x) for x in line.split()] for line in f]


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(
        prog="python -m kaldi_avg.frontend.grammar",
        usage="python -m kaldi_avg.frontend.grammar [--one-word | --digit-string [--min-len 1 --max-len 7] | "
              "--arpa <lm.arpa>] [--words 'w1 w2 ...'] <lang-dir> <out-lang-dir>",
        description="Writes <out-lang-dir> = <lang-dir> + G.fst (utils/format_lm.sh, also for grammars).")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--one-word", action="store_true", help="exactly one word per utterance")
    kind.add_argument("--digit-string", action="store_true", help="strings of --min-len..--max-len words")
    kind.add_argument("--arpa", default=None, help="an ARPA language model")
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--max-len", type=int, default=7)
    p.add_argument("--words", default=None,
                   help="grammar words (default: every speech word of the lexicon except the OOV word)")
    p.add_argument("lang_dir")
    p.add_argument("out_dir")
    a = parse_kaldi_args(p, argv)
    try:
        lang = Lang.load(a.lang_dir)
        if a.arpa:
            G = arpa_grammar(a.arpa, lang.path("words.txt"))
        else:
            words = a.words.split() if a.words else speech_words(lang)
            text = one_word_grammar(words) if a.one_word else digit_string_grammar(words, a.min_len, a.max_len)
            G = compile_grammar(text, lang.words)
        write_lang_with_grammar(a.lang_dir, G, a.out_dir)
    except (LangError, OSError) as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
