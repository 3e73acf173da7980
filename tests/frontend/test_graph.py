"""Grammars (G.fst) and utils/mkgraph.sh without Kaldi: the graph dir's files, a const HCLG for
Kaldi/vosk with a vector copy, disambiguation symbols removed, checked with kaldifst."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import kaldifst
import pytest

from kaldi_avg.frontend.dataprep import DIGIT_WORDS
from kaldi_avg.frontend.grammar import (
    arpa_grammar,
    compile_grammar,
    digit_string_grammar,
    one_word_grammar,
    speech_words,
    write_lang_with_grammar,
)
from kaldi_avg.frontend.graph import VECTOR_GRAPH, load_graph, mkgraph
from kaldi_avg.frontend.lang import Lang, LangError, read_int_list
from kaldi_avg.kaldi.transition import read_transition_model
from tests.frontend.gmm_system import REPO, gmm_system

ARPA = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0 </s>
-99 <s> -0.5
-0.5 one -0.3
-0.5 two -0.3
-0.6 three -0.3

\\2-grams:
-0.2 <s> one
-0.3 one two
-0.4 two </s>

\\end\\
"""


@pytest.fixture(scope="module")
def system():
    return gmm_system()


def _arcs(fst):
    return [a for s in range(fst.num_states) for a in kaldifst.ArcIterator(fst, s)]


def _accepts(G, word_ids):
    """Cost of the best path of G accepting exactly `word_ids`, or None."""
    kaldifst.arcsort(G, sort_type="olabel")
    path = kaldifst.shortest_path(kaldifst.compose(G, kaldifst.make_linear_acceptor(word_ids)))
    if path.num_states == 0:
        return None
    ok, _, out, weight = kaldifst.get_linear_symbol_sequence(path)
    assert ok and list(out) == list(word_ids)
    return float(weight.value)


def test_grammars_are_normalised_acceptors(system):
    lang = Lang.load(str(system.lang))
    ids = [lang.words[w] for w in DIGIT_WORDS]
    G = compile_grammar(one_word_grammar(list(DIGIT_WORDS)), lang.words)
    assert _accepts(G, ids[3:4]) == pytest.approx(math.log(10), abs=1e-5)
    assert _accepts(G, ids[3:5]) is None and _accepts(G, []) is None
    G = compile_grammar(digit_string_grammar(list(DIGIT_WORDS), 2, 4), lang.words)
    for n in (2, 3, 4):  # the length is uniform over 2..4, each word uniform
        assert _accepts(G, ids[:n]) == pytest.approx(math.log(3) + n * math.log(10), abs=1e-4)
    assert _accepts(G, ids[:1]) is None and _accepts(G, ids[:5]) is None
    with pytest.raises(LangError, match="not in words.txt"):
        compile_grammar(one_word_grammar(["zero", "eleven"]), lang.words)
    assert speech_words(lang) == sorted(DIGIT_WORDS, key=str.encode)


def test_graph_dir_files(system):
    g = system.graph
    for name in ("HCLG.fst", VECTOR_GRAPH, "words.txt", "phones.txt", "num_pdfs", "disambig_tid.int",
                 "phones/silence.csl", "phones/disambig.int", "phones/word_boundary.int", "phones/align_lexicon.int"):
        assert (g / name).is_file(), name
    header = (g / "HCLG.fst").read_bytes()[:30]
    assert header[:4] == bytes.fromhex("d6fdb27e") and b"const" in header and b"standard" in header
    assert kaldifst.StdVectorFst.read(str(g / "HCLG.fst")) is None  # const: kaldifst cannot read it
    tm = read_transition_model(str(system.mono / "final.mdl"))
    assert (g / "num_pdfs").read_text() == f"{tm.num_pdfs}\n"
    assert (g / "words.txt").read_text() == (system.lang_test / "words.txt").read_text()


def test_hclg_maps_transition_ids_to_single_digits(system):
    hclg = load_graph(str(system.graph))
    tm = read_transition_model(str(system.mono / "final.mdl"))
    lang = Lang.load(str(system.lang_test))
    arcs = _arcs(hclg)
    assert {a.ilabel for a in arcs} <= set(range(tm.num_transition_ids + 1))
    assert not {a.ilabel for a in arcs} & set(read_int_list(str(system.graph / "disambig_tid.int")))
    assert {a.olabel for a in arcs} - {0} == {lang.words[w] for w in DIGIT_WORDS}
    ok, tids, words, _ = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(hclg))
    assert ok and len(words) == 1 and len(tids) >= 3  # one word, at least one state per HMM


def test_arpa_lm_graph_removes_disambiguation_symbols(system, tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(ARPA)
    lang = Lang.load(str(system.lang))
    G = arpa_grammar(str(arpa), lang.path("words.txt"))
    assert lang.words["#0"] in {a.ilabel for a in _arcs(G)}  # backoff arcs
    write_lang_with_grammar(lang.dir, G, str(tmp_path / "lang_lm"))
    mkgraph(str(tmp_path / "lang_lm"), str(system.mono), str(tmp_path / "graph"))
    disambig = set(read_int_list(str(tmp_path / "graph" / "disambig_tid.int")))
    assert disambig  # #0 reached H as a disambiguation transition-id ...
    assert not disambig & {a.ilabel for a in _arcs(load_graph(str(tmp_path / "graph")))}  # ... and was removed


def test_format_lm_and_mkgraph_command_lines(system, tmp_path):
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    (tmp_path / "lm.arpa").write_text(ARPA)
    r = subprocess.run(["bash", str(REPO / "utils" / "format_lm.sh"), str(system.lang), str(tmp_path / "lm.arpa"),
                        str(system.lang / "phones.txt"), str(tmp_path / "lang_lm")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lang_lm" / "G.fst").is_file() and (tmp_path / "lang_lm" / "L_disambig.fst").is_file()
    r = subprocess.run(["bash", str(REPO / "utils" / "mkgraph.sh"), "--quinphone", str(tmp_path / "lang_lm"),
                        str(system.mono), str(tmp_path / "graph")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "does not match the tree" in r.stderr
    r = subprocess.run(["bash", str(REPO / "utils" / "mkgraph.sh"), str(tmp_path / "lang_lm")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1 and "usage: utils/mkgraph.sh" in r.stdout + r.stderr
    r = subprocess.run(["bash", str(REPO / "utils" / "mkgraph.sh"), "--mono", str(system.lang), str(system.mono),
                        str(tmp_path / "graph")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "G.fst to exist" in r.stderr
