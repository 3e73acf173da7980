"""utils/prepare_lang.sh without Kaldi: symbol tables, disambiguation, L/L_disambig FSTs, topo and
the phones/ files, checked against Kaldi's rules and read back with kaldifst and khg."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import kaldi_hmm_gmm as khg
import kaldifst
import pytest

from kaldi_avg.frontend.lang import Lang, LangError, prepare_lang, read_int_list, read_symbol_table

REPO = Path(__file__).resolve().parents[2]

LEXICON = """a AA B
ab AA B K
b B
b2 B
sil SIL
<unk> SPN
"""


def _dict(tmp_path: Path, lexicon: str = LEXICON, name: str = "lexicon.txt") -> Path:
    d = tmp_path / "dict"
    d.mkdir()
    (d / name).write_text(lexicon)
    (d / "silence_phones.txt").write_text("SIL\nSPN\n")
    (d / "optional_silence.txt").write_text("SIL\n")
    (d / "nonsilence_phones.txt").write_text("AA\nB\nK\n")
    (d / "extra_questions.txt").write_text("")
    return d


def _words_of_path(L, word_ids, phones):
    """The shortest path of L o <linear word acceptor>: (phones, total cost)."""
    acc = kaldifst.make_linear_acceptor(word_ids)
    kaldifst.arcsort(L, sort_type="olabel")
    path = kaldifst.shortest_path(kaldifst.compose(L, acc))
    ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(path)
    assert ok
    names = {i: p for p, i in phones.items()}
    return [names[i] for i in ilabels], float(weight.value), olabels


def test_symbol_tables_follow_prepare_lang(tmp_path):
    prepare_lang(str(_dict(tmp_path)), "<unk>", str(tmp_path / "lang"))
    phones = list(read_symbol_table(str(tmp_path / "lang" / "phones.txt")))
    assert phones[:6] == ["<eps>", "SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S"]
    assert phones[6:11] == ["SPN", "SPN_B", "SPN_E", "SPN_I", "SPN_S"]
    assert phones[11:15] == ["AA_B", "AA_E", "AA_I", "AA_S"]
    # "b"/"b2" are homophones: #1, #2 (+1 for optional silence) => #0..#3; with word-position
    # phones "a" (AA_B B_E) is no prefix of "ab" (AA_B B_I K_E)
    assert phones[-4:] == ["#0", "#1", "#2", "#3"]
    words = read_symbol_table(str(tmp_path / "lang" / "words.txt"))
    assert list(words) == ["<eps>", "<unk>", "a", "ab", "b", "b2", "sil", "#0", "<s>", "</s>"]
    assert list(words.values()) == list(range(10))
    assert (tmp_path / "lang" / "oov.int").read_text() == f"{words['<unk>']}\n"


def test_lexicon_fsts_spell_words_with_optional_silence(tmp_path):
    prepare_lang(str(_dict(tmp_path)), "<unk>", str(tmp_path / "lang"), sil_prob=0.5)
    lang = Lang.load(str(tmp_path / "lang"))
    L = kaldifst.StdVectorFst.read(lang.path("L.fst"))
    phones, cost, olabels = _words_of_path(L, [lang.words["ab"], lang.words["b"]], lang.phones)
    assert phones == ["AA_B", "B_I", "K_E", "B_S"]
    assert olabels == [lang.words["ab"], lang.words["b"]]
    assert cost == pytest.approx(3 * math.log(2), abs=1e-4)  # no silence at start, after ab, after b
    Ld = kaldifst.StdVectorFst.read(lang.path("L_disambig.fst"))
    phones, _, _ = _words_of_path(Ld, [lang.words["a"], lang.words["b2"]], lang.phones)
    assert phones == ["AA_B", "B_E", "B_S", "#2"]
    # fstaddselfloops: #0 (phone) -> #0 (word) loops pass G's backoff symbol through the lexicon
    loops = [(a.ilabel, a.olabel) for s in range(Ld.num_states) for a in kaldifst.ArcIterator(Ld, s)
             if a.nextstate == s]
    assert (lang.phones["#0"], lang.words["#0"]) in loops
    # the silence disambiguation symbol is the last one
    assert any(a.ilabel == lang.phones["#3"] for s in range(Ld.num_states) for a in kaldifst.ArcIterator(Ld, s))


def test_topology_is_gen_topo_and_khg_reads_it(tmp_path):
    prepare_lang(str(_dict(tmp_path)), "<unk>", str(tmp_path / "lang"))
    lang = Lang.load(str(tmp_path / "lang"))
    topo = khg.HmmTopology()
    topo.read((tmp_path / "lang" / "topo").read_text())
    topo.check()
    assert topo.phones == sorted(lang.ints("silence") + lang.ints("nonsilence"))
    num_classes = topo.get_phone_to_num_pdf_classes()
    assert {num_classes[p] for p in lang.ints("nonsilence")} == {3}
    assert {num_classes[p] for p in lang.ints("silence")} == {5}
    text = (tmp_path / "lang" / "topo").read_text()
    assert "<State> 0 <PdfClass> 0 <Transition> 0 0.25 <Transition> 1 0.25 <Transition> 2 0.25 " \
           "<Transition> 3 0.25 </State>" in text


def test_phones_dir_files(tmp_path):
    prepare_lang(str(_dict(tmp_path)), "<unk>", str(tmp_path / "lang"))
    ph = tmp_path / "lang" / "phones"
    lang = Lang.load(str(tmp_path / "lang"))
    assert (ph / "silence.csl").read_text().strip() == ":".join(str(i) for i in range(1, 11))
    assert (ph / "optional_silence.txt").read_text() == "SIL\n"
    assert read_int_list(str(ph / "disambig.int")) == [lang.phones[f"#{i}"] for i in range(4)]
    assert (ph / "sets.txt").read_text().splitlines()[0] == "SIL SIL_B SIL_E SIL_I SIL_S"
    assert (ph / "roots.txt").read_text().splitlines()[2] == "shared split AA_B AA_E AA_I AA_S"
    assert (ph / "extra_questions.txt").read_text().splitlines()[0] == "AA_B B_B K_B"
    assert (ph / "word_boundary.txt").read_text().splitlines()[:2] == ["SIL nonword", "SIL_B begin"]
    assert (ph / "word_boundary.int").read_text().splitlines()[0] == "1 nonword"
    assert "<eps> <eps> SIL" in (ph / "align_lexicon.txt").read_text().splitlines()
    assert f"{lang.words['ab']} {lang.words['ab']} {lang.phones['AA_B']} {lang.phones['B_I']} " \
           f"{lang.phones['K_E']}" in (ph / "align_lexicon.int").read_text().splitlines()
    assert read_int_list(str(ph / "wdisambig_words.int")) == [lang.words["#0"]]


def test_position_independent_and_no_silence(tmp_path):
    prepare_lang(str(_dict(tmp_path)), "<unk>", str(tmp_path / "lang"), position_dependent_phones=False,
                 sil_prob=0.0)
    lang = Lang.load(str(tmp_path / "lang"))
    assert [p for p in lang.phones if not p.startswith("#")] == ["<eps>", "SIL", "SPN", "AA", "B", "K"]
    assert not (tmp_path / "lang" / "phones" / "word_boundary.txt").exists()
    L = kaldifst.StdVectorFst.read(lang.path("L.fst"))
    phones, cost, _ = _words_of_path(L, [lang.words["ab"]], lang.phones)
    assert (phones, cost) == (["AA", "B", "K"], 0.0)
    # now "a" (AA B) is a prefix of "ab" (AA B K): add_lex_disambig.pl gives it #1
    Ld = kaldifst.StdVectorFst.read(lang.path("L_disambig.fst"))
    assert _words_of_path(Ld, [lang.words["a"]], lang.phones)[0] == ["AA", "B", "#1"]


def test_pronunciation_probabilities(tmp_path):
    d = _dict(tmp_path, "a 1.0 AA\na 0.5 AA B\nsil 1.0 SIL\n<unk> 1.0 SPN\n", name="lexiconp.txt")
    prepare_lang(str(d), "<unk>", str(tmp_path / "lang"), sil_prob=0.0)
    lang = Lang.load(str(tmp_path / "lang"))
    L = kaldifst.StdVectorFst.read(lang.path("L.fst"))
    phones, cost, _ = _words_of_path(L, [lang.words["a"]], lang.phones)
    assert (phones, cost) == (["AA_S"], 0.0)


@pytest.mark.parametrize("lexicon, message", [
    ("a AA X\n<unk> SPN\n", r"lexicon.txt:1: phone 'X'"),
    ("a\n<unk> SPN\n", r"lexicon.txt:1: word 'a' has no phones"),
    ("<s> AA\n<unk> SPN\n", r"reserved symbol"),
])
def test_bad_dict_names_file_and_line(tmp_path, lexicon, message):
    with pytest.raises(LangError, match=message):
        prepare_lang(str(_dict(tmp_path, lexicon)), "<unk>", str(tmp_path / "lang"))


def test_unknown_oov_word_is_an_error(tmp_path):
    with pytest.raises(LangError, match="OOV word '<UNK>'"):
        prepare_lang(str(_dict(tmp_path)), "<UNK>", str(tmp_path / "lang"))


def test_prepare_lang_command_line(tmp_path):
    d = _dict(tmp_path)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    ok = subprocess.run(["bash", str(REPO / "utils" / "prepare_lang.sh"), "--position-dependent-phones", "false",
                         "--sil-prob", "0.3", str(d), "<unk>", str(tmp_path / "tmp"), str(tmp_path / "lang")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "AA_B" not in (tmp_path / "lang" / "phones.txt").read_text()
    bad = subprocess.run(["bash", str(REPO / "utils" / "prepare_lang.sh"), str(d), "<unk>"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "usage: utils/prepare_lang.sh" in bad.stdout + bad.stderr
