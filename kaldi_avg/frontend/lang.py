"""`utils/prepare_lang.sh` without Kaldi: a dict dir becomes a lang dir (phones.txt, words.txt,
L.fst, L_disambig.fst, topo, oov.*, phones/*), file for file as Kaldi's script writes it.
Also a command: python -m kaldi_avg.frontend.lang (utils/prepare_lang.sh's arguments).

The steps follow prepare_lang.sh and the helpers it calls (add_lex_disambig.pl,
make_lexicon_fst.pl, gen_topo.pl, fstaddselfloops); symbol numbering and file contents match.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import kaldifst

from ..atomic import atomic_path, copy_file, write_lines, write_text
from ..options import KaldiArgumentParser, kaldi_bool
from .cliopts import parse_kaldi_args

POSITION_SUFFIXES = ("_B", "_E", "_I", "_S")


class LangError(ValueError):
    """A dict or lang directory is malformed; the message names the file and line."""


# --- symbol tables and small integer files ------------------------------------------------

def read_symbol_table(path: str) -> dict[str, int]:
    """words.txt / phones.txt: `symbol integer` per line."""
    table = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise LangError(f"{path}:{n}: expected 'symbol integer', got {line.rstrip()!r}")
            table[parts[0]] = int(parts[1])
    return table


def read_int_list(path: str) -> list[int]:
    """A file of whitespace-separated integers (`*.int`, or a colon-separated `*.csl`)."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace(":", " ")
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        raise LangError(f"{path}: expected integers, got {text.strip()[:80]!r}") from None


def _symbols_to_ints(table: dict[str, int], symbols, path: str) -> list[int]:
    missing = [s for s in symbols if s not in table]
    if missing:
        raise LangError(f"{path}: symbol {missing[0]!r} is not in the symbol table")
    return [table[s] for s in symbols]


# --- the dict dir ------------------------------------------------------------------------

@dataclass
class LexiconEntry:
    word: str
    prob: float
    phones: list[str]


@dataclass
class DictDir:
    lexicon: list[LexiconEntry]
    silence_phones: list[list[str]]      # one line = one base phone and its variants
    nonsilence_phones: list[list[str]]
    optional_silence: str
    extra_questions: list[list[str]]


def _read_phone_lines(path: str, required: bool = True) -> list[list[str]]:
    if not os.path.exists(path):
        if required:
            raise LangError(f"{path}: missing (required in a dict dir)")
        return []
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def read_dict_dir(dict_dir: str) -> DictDir:
    """Reads and validates a dict dir as utils/validate_dict_dir.pl would."""
    sil = _read_phone_lines(os.path.join(dict_dir, "silence_phones.txt"))
    nonsil = _read_phone_lines(os.path.join(dict_dir, "nonsilence_phones.txt"))
    opt_lines = _read_phone_lines(os.path.join(dict_dir, "optional_silence.txt"))
    extra = _read_phone_lines(os.path.join(dict_dir, "extra_questions.txt"), required=False)
    opt_path = os.path.join(dict_dir, "optional_silence.txt")
    if len(opt_lines) != 1 or len(opt_lines[0]) != 1:
        raise LangError(f"{opt_path}: expected exactly one phone")
    sil_set = [p for line in sil for p in line]
    nonsil_set = [p for line in nonsil for p in line]
    all_phones = sil_set + nonsil_set
    if len(set(all_phones)) != len(all_phones):
        dup = next(p for p in all_phones if all_phones.count(p) > 1)
        raise LangError(f"{dict_dir}: phone {dup!r} appears twice in silence_phones.txt/nonsilence_phones.txt")
    for p in all_phones:
        if p.endswith(POSITION_SUFFIXES) or p.startswith("#") or p == "<eps>":
            raise LangError(f"{dict_dir}: phone {p!r} is not allowed (word-position suffix, '#' or <eps>)")
    if opt_lines[0][0] not in sil_set:
        raise LangError(f"{opt_path}: optional silence {opt_lines[0][0]!r} is not in silence_phones.txt")
    known = set(all_phones)
    for q in extra:
        for p in q:
            if p not in known:
                raise LangError(f"{dict_dir}/extra_questions.txt: unknown phone {p!r}")
    return DictDir(_read_lexicon(dict_dir, known), sil, nonsil, opt_lines[0][0], extra)


def _read_lexicon(dict_dir: str, known_phones: set[str]) -> list[LexiconEntry]:
    # prepare_lang.sh prefers lexiconp.txt when both exist
    lexp = os.path.join(dict_dir, "lexiconp.txt")
    path = lexp if os.path.exists(lexp) else os.path.join(dict_dir, "lexicon.txt")
    if not os.path.exists(path):
        raise LangError(f"{dict_dir}: neither lexicon.txt nor lexiconp.txt exists")
    with_prob = path == lexp
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            word, rest = fields[0], fields[1:]
            prob = 1.0
            if with_prob:
                try:
                    prob = float(rest[0]) if rest else -1.0
                except ValueError:
                    prob = -1.0
                if not 0.0 < prob <= 1.0:
                    raise LangError(f"{path}:{n}: bad pronunciation probability in {line.rstrip()!r}")
                rest = rest[1:]
            if not rest:
                raise LangError(f"{path}:{n}: word {word!r} has no phones")
            if word in ("<eps>", "<s>", "</s>", "#0"):
                raise LangError(f"{path}:{n}: {word!r} is a reserved symbol and cannot be a word")
            for p in rest:
                if p not in known_phones:
                    raise LangError(f"{path}:{n}: phone {p!r} is not in silence_phones.txt or nonsilence_phones.txt")
            entries.append(LexiconEntry(word, prob, rest))
    if not entries:
        raise LangError(f"{path}: empty lexicon")
    return entries


# --- prepare_lang.sh -----------------------------------------------------------------------

def _position_marked(phones: list[str]) -> list[str]:
    if len(phones) == 1:
        return [phones[0] + "_S"]
    return [phones[0] + "_B"] + [p + "_I" for p in phones[1:-1]] + [phones[-1] + "_E"]


def _phone_map(d: DictDir, position_dependent: bool) -> dict[str, list[str]]:
    """Each dict phone -> its lang phones (silence keeps its plain form as one variant)."""
    if not position_dependent:
        return {p: [p] for line in d.silence_phones + d.nonsilence_phones for p in line}
    m = {p: [p] + [p + s for s in POSITION_SUFFIXES] for line in d.silence_phones for p in line}
    m.update({p: [p + s for s in POSITION_SUFFIXES] for line in d.nonsilence_phones for p in line})
    return m


def _add_lex_disambig(prons: list[list[str]]) -> tuple[list[list[str]], int]:
    """add_lex_disambig.pl: #1, #2, ... on prons that are prefixes of others or homophones."""
    count: dict[tuple, int] = {}
    prefixes: set[tuple] = set()
    for p in prons:
        count[tuple(p)] = count.get(tuple(p), 0) + 1
        for k in range(len(p)):
            prefixes.add(tuple(p[:k]))
    last_used: dict[tuple, int] = {}
    max_disambig = 0
    out = []
    for p in prons:
        key = tuple(p)
        if key not in prefixes and count[key] == 1:
            out.append(list(p))
            continue
        last_used[key] = last_used.get(key, 0) + 1
        max_disambig = max(max_disambig, last_used[key])
        out.append(list(p) + [f"#{last_used[key]}"])
    return out, max_disambig


def _lexicon_fst_text(entries: list[tuple[str, float, list[str]]], phone_ids, word_ids,
                      sil_prob: float, sil_phone: str, sil_disambig: str | None) -> str:
    """make_lexicon_fst.pl --pron-probs, as integer-labelled FST text."""
    lines = []

    def arc(s, d, p, w, cost=0.0):
        lines.append(f"{s} {d} {phone_ids[p] if p else 0} {word_ids[w] if w else 0}"
                     + (f" {cost!r}" if cost != 0.0 else ""))

    if sil_prob == 0.0:
        loop, next_state = 0, 1
        for word, prob, phones in entries:
            s, w, cost = loop, word, -math.log(prob)
            for i, p in enumerate(phones):
                ns = loop if i == len(phones) - 1 else next_state
                if ns != loop:
                    next_state += 1
                arc(s, ns, p, w, cost)
                w, cost, s = None, 0.0, ns
        lines.append(f"{loop} 0")
        return "\n".join(lines) + "\n"
    sil_cost, nosil_cost = -math.log(sil_prob), -math.log(1.0 - sil_prob)
    start, loop, sil_state = 0, 1, 2
    arc(start, loop, None, None, nosil_cost)
    if sil_disambig is None:
        arc(start, loop, sil_phone, None, sil_cost)
        arc(sil_state, loop, sil_phone, None)
        next_state = 3
    else:
        disambig_state, next_state = 3, 4
        arc(start, disambig_state, sil_phone, None, sil_cost)
        arc(sil_state, disambig_state, sil_phone, None)
        arc(disambig_state, loop, sil_disambig, None)
    for word, prob, phones in entries:
        s, w, pron_cost = loop, word, -math.log(prob)
        for i, p in enumerate(phones):
            if i < len(phones) - 1:
                arc(s, next_state, p, w, pron_cost)
                s, w, pron_cost = next_state, None, 0.0
                next_state += 1
            elif p != sil_phone:
                # both exits (with and without optional silence) on the last phone: no epsilons
                arc(s, loop, p, w, nosil_cost + pron_cost)
                arc(s, sil_state, p, w, sil_cost + pron_cost)
            else:
                arc(s, loop, p, w, pron_cost)
    lines.append(f"{loop} 0")
    return "\n".join(lines) + "\n"


def _write_fst(fst, path: str) -> None:
    with atomic_path(path) as tmp:
        if not fst.write(tmp):
            raise OSError(f"{path}: could not write FST")


def gen_topo(nonsil_ids: list[int], sil_ids: list[int], num_nonsil_states: int = 3,
             num_sil_states: int = 5) -> str:
    """utils/gen_topo.pl: left-to-right nonsilence HMMs, ergodic-middle silence HMMs."""
    if not 1 <= num_nonsil_states <= 100 or not 3 <= num_sil_states <= 100:
        raise LangError(f"unexpected numbers of HMM states: {num_nonsil_states}, {num_sil_states}")
    out = ["<Topology>", "<TopologyEntry>", "<ForPhones>", " ".join(map(str, nonsil_ids)), "</ForPhones>"]
    for s in range(num_nonsil_states):
        out.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    out += [f"<State> {num_nonsil_states} </State>", "</TopologyEntry>"]
    p = "%.15g" % (1.0 / (num_sil_states - 1))
    out += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, sil_ids)), "</ForPhones>"]
    out.append("<State> 0 <PdfClass> 0 " + "".join(f"<Transition> {d} {p} " for d in range(num_sil_states - 1))
               + "</State>")
    for s in range(1, num_sil_states - 1):
        out.append(f"<State> {s} <PdfClass> {s} "
                   + "".join(f"<Transition> {d} {p} " for d in range(1, num_sil_states)) + "</State>")
    last = num_sil_states - 1
    out.append(f"<State> {last} <PdfClass> {last} <Transition> {last} 0.75 "
               f"<Transition> {num_sil_states} 0.25 </State>")
    out += [f"<State> {num_sil_states} </State>", "</TopologyEntry>", "</Topology>"]
    return "\n".join(out) + "\n"


def _word_boundary(phone: str) -> str:
    for suffix, kind in (("_I", "internal"), ("_B", "begin"), ("_S", "singleton"), ("_E", "end")):
        if phone.endswith(suffix):
            return kind
    return "nonword"


def prepare_lang(dict_dir: str, oov_word: str, lang_dir: str, position_dependent_phones: bool = True,
                 sil_prob: float = 0.5, num_sil_states: int = 5, num_nonsil_states: int = 3) -> None:
    """Writes `lang_dir` from `dict_dir` like `utils/prepare_lang.sh dict oov tmp lang`."""
    if not 0.0 <= sil_prob < 1.0:
        raise LangError(f"--sil-prob must be in [0, 1), got {sil_prob}")
    d = read_dict_dir(dict_dir)
    pmap = _phone_map(d, position_dependent_phones)
    lex = [(e.word, e.prob, _position_marked(e.phones) if position_dependent_phones else list(e.phones))
           for e in d.lexicon]
    disambig_prons, max_disambig = _add_lex_disambig([p for _, _, p in lex])
    num_disambig = max_disambig + 1  # one more for the optional silence in L_disambig.fst

    def expand(lines):
        return [[v for p in line for v in pmap[p]] for line in lines]

    silence = [v for line in expand(d.silence_phones) for v in line]
    nonsilence = [v for line in expand(d.nonsilence_phones) for v in line]
    disambig = [f"#{n}" for n in range(num_disambig + 1)]
    phone_ids = {p: i for i, p in enumerate(["<eps>"] + silence + nonsilence + disambig)}
    words = sorted({w for w, _, _ in lex}, key=lambda w: w.encode("utf-8"))
    word_ids = {"<eps>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    for extra in ("#0", "<s>", "</s>"):
        word_ids[extra] = len(word_ids)
    if oov_word not in word_ids:
        raise LangError(f"{dict_dir}: the OOV word {oov_word!r} is not in the lexicon")

    ph = os.path.join(lang_dir, "phones")
    os.makedirs(ph, exist_ok=True)
    write_lines(os.path.join(lang_dir, "phones.txt"), [f"{p} {i}" for p, i in phone_ids.items()])
    write_lines(os.path.join(lang_dir, "words.txt"), [f"{w} {i}" for w, i in word_ids.items()])
    write_lines(os.path.join(lang_dir, "oov.txt"), [oov_word])
    write_lines(os.path.join(lang_dir, "oov.int"), [str(word_ids[oov_word])])

    sets = expand(d.silence_phones + d.nonsilence_phones)
    extra_q = expand(d.extra_questions)
    if position_dependent_phones:
        for s in POSITION_SUFFIXES:
            extra_q.append([p + s for line in d.nonsilence_phones for p in line])
        for s in ("",) + POSITION_SUFFIXES:
            extra_q.append([p + s for line in d.silence_phones for p in line])
    lists = {"silence": silence, "nonsilence": nonsilence, "optional_silence": [d.optional_silence],
             "disambig": disambig, "context_indep": silence}
    for name, syms in lists.items():
        ids = _symbols_to_ints(phone_ids, syms, os.path.join(ph, f"{name}.txt"))
        write_lines(os.path.join(ph, f"{name}.txt"), syms)
        write_lines(os.path.join(ph, f"{name}.int"), map(str, ids))
        write_lines(os.path.join(ph, f"{name}.csl"), [":".join(map(str, ids))])
    for name, rows in (("sets", sets), ("extra_questions", extra_q)):
        write_lines(os.path.join(ph, f"{name}.txt"), [" ".join(r) for r in rows])
        write_lines(os.path.join(ph, f"{name}.int"), [" ".join(str(phone_ids[p]) for p in r) for r in rows])
    write_lines(os.path.join(ph, "roots.txt"), ["shared split " + " ".join(r) for r in sets])
    write_lines(os.path.join(ph, "roots.int"),
                ["shared split " + " ".join(str(phone_ids[p]) for p in r) for r in sets])
    if position_dependent_phones:
        wb = [(p, _word_boundary(p)) for p in silence + nonsilence]
        write_lines(os.path.join(ph, "word_boundary.txt"), [f"{p} {k}" for p, k in wb])
        write_lines(os.path.join(ph, "word_boundary.int"), [f"{phone_ids[p]} {k}" for p, k in wb])
    elif os.path.exists(os.path.join(dict_dir, "word_boundary.txt")):
        copy_file(os.path.join(dict_dir, "word_boundary.txt"), os.path.join(ph, "word_boundary.txt"))

    align = sorted({f"{w} {w} {' '.join(p)}" for w, _, p in lex} | {f"<eps> <eps> {d.optional_silence}"},
                   key=lambda s: s.encode("utf-8"))
    write_lines(os.path.join(ph, "align_lexicon.txt"), align)
    write_lines(os.path.join(ph, "align_lexicon.int"),
                [" ".join([str(word_ids[f[0]]), str(word_ids[f[1]])] + [str(phone_ids[p]) for p in f[2:]])
                 for f in (line.split() for line in align)])
    write_lines(os.path.join(ph, "wdisambig.txt"), ["#0"])
    write_lines(os.path.join(ph, "wdisambig_phones.int"), [str(phone_ids["#0"])])
    write_lines(os.path.join(ph, "wdisambig_words.int"), [str(word_ids["#0"])])

    write_text(os.path.join(lang_dir, "topo"),
               gen_topo(_symbols_to_ints(phone_ids, nonsilence, "nonsilence phones"),
                        _symbols_to_ints(phone_ids, silence, "silence phones"),
                        num_nonsil_states, num_sil_states))

    sil_phone = d.optional_silence
    L = kaldifst.compile(_lexicon_fst_text(lex, phone_ids, word_ids, sil_prob, sil_phone, None))
    kaldifst.arcsort(L, sort_type="olabel")
    _write_fst(L, os.path.join(lang_dir, "L.fst"))
    lex_disambig = [(w, prob, p) for (w, prob, _), p in zip(lex, disambig_prons)]
    Ld = kaldifst.compile(_lexicon_fst_text(lex_disambig, phone_ids, word_ids, sil_prob, sil_phone,
                                            f"#{num_disambig}"))
    # fstaddselfloops: #0 from G passes through the lexicon (without it G's backoff arcs vanish)
    kaldifst.add_self_loops(Ld, isyms=[phone_ids["#0"]], osyms=[word_ids["#0"]])
    kaldifst.arcsort(Ld, sort_type="olabel")
    _write_fst(Ld, os.path.join(lang_dir, "L_disambig.fst"))


@dataclass
class Lang:
    """What later stages read from a lang (or graph) dir."""
    dir: str
    phones: dict[str, int]
    words: dict[str, int]

    @classmethod
    def load(cls, lang_dir: str) -> Lang:
        return cls(lang_dir, read_symbol_table(os.path.join(lang_dir, "phones.txt")),
                   read_symbol_table(os.path.join(lang_dir, "words.txt")))

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def ints(self, name: str) -> list[int]:
        """`phones/<name>.int` (or .csl)."""
        p = self.path("phones", name + ".int")
        return read_int_list(p if os.path.exists(p) else self.path("phones", name + ".csl"))

    def id_to_word(self) -> dict[int, str]:
        return {i: w for w, i in self.words.items()}

    def oov_id(self) -> int:
        return read_int_list(self.path("oov.int"))[0]

    def words_to_ids(self, words: list[str]) -> list[int]:
        """Transcript words -> ids with OOVs mapped to oov.int (`sym2int.pl --map-oov`)."""
        oov = self.oov_id()
        return [self.words.get(w, oov) for w in words]


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="utils/prepare_lang.sh",
                            usage="utils/prepare_lang.sh [options] <dict-src-dir> <oov-dict-entry> <tmp-dir> "
                                  "<lang-dir>",
                            description="Prepares a lang dir from a dict dir (Kaldi's utils/prepare_lang.sh).")
    p.add_argument("--num-sil-states", type=int, default=5)
    p.add_argument("--num-nonsil-states", type=int, default=3)
    p.add_argument("--position-dependent-phones", type=kaldi_bool, default=True)
    p.add_argument("--sil-prob", type=float, default=0.5)
    p.add_argument("--share-silence-phones", type=kaldi_bool, default=False)
    p.add_argument("--phone-symbol-table", default="")
    p.add_argument("dict_dir")
    p.add_argument("oov_word")
    p.add_argument("tmp_dir", help="accepted for compatibility; nothing is written there")
    p.add_argument("lang_dir")
    a = parse_kaldi_args(p, argv)
    if a.share_silence_phones or a.phone_symbol_table:
        print("utils/prepare_lang.sh: --share-silence-phones and --phone-symbol-table are not supported",
              file=sys.stderr)
        return 1
    try:
        prepare_lang(a.dict_dir, a.oov_word, a.lang_dir, a.position_dependent_phones, a.sil_prob,
                     a.num_sil_states, a.num_nonsil_states)
    except (LangError, OSError) as e:
        print(f"utils/prepare_lang.sh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
