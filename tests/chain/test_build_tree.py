"""The chain stand-ins with Kaldi's command lines: steps/nnet3/chain/gen_topo.py and
steps/nnet3/chain/build_tree.sh (kaldi_avg/chain/build_tree.py), run as a recipe runs them, on the
shared FSDD monophone GMM system (tests/frontend/gmm_system.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kaldi_avg.chain.build_tree import context_width
from kaldi_avg.chain.prepare import PrepareError
from kaldi_avg.chain.topology import gen_topo, read_chain_tree_dir
from kaldi_avg.frontend.lang import read_int_list
from kaldi_avg.kaldi.alignment import alignment_archives
from kaldi_avg.kaldi.datadir import feat_to_len
from kaldi_avg.kaldi.transition import read_transition_model

REPO = Path(__file__).resolve().parents[2]


def recipe(root: Path) -> Path:
    """A recipe dir whose steps/ and utils/ are this checkout's, with its venv's python3 first."""
    s5 = root / "s5"
    s5.mkdir()
    (s5 / "steps").symlink_to(REPO / "steps")
    (s5 / "utils").symlink_to(REPO / "utils")
    (s5 / "path.sh").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
                                f'export PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"\nexport LC_ALL=C\n')
    return s5


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KALDI_ROOT"}
    return subprocess.run(["bash", "-c", f". ./path.sh && {command}"], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def system():
    from tests.frontend.gmm_system import gmm_system
    return gmm_system()


@pytest.fixture()
def lang_chain(tmp_path, system):
    """cp -r data/lang data/lang_chain; gen_topo.py ... > data/lang_chain/topo (as the recipes do)."""
    s5 = recipe(tmp_path)
    lang = tmp_path / "lang_chain"
    shutil.copytree(system.lang, lang)
    r = sh(f"steps/nnet3/chain/gen_topo.py $(cat {lang}/phones/nonsilence.csl) $(cat {lang}/phones/silence.csl) "
           f"> {lang}/topo", s5)
    assert r.returncode == 0, r.stderr
    return s5, lang


def test_gen_topo_py_is_kaldis_output(lang_chain):
    s5, lang = lang_chain
    nonsil = read_int_list(str(lang / "phones/nonsilence.csl"))
    sil = read_int_list(str(lang / "phones/silence.csl"))
    assert (lang / "topo").read_text() == gen_topo(nonsil, sil)
    r = sh("steps/nnet3/chain/gen_topo.py 1:2", s5)
    assert r.returncode == 1 and "Usage" in r.stderr


def test_build_tree_sh_makes_what_chain_train_py_reads(tmp_path, system, lang_chain):
    """tree, final.mdl (the chain transition model: 0.trans_mdl's bytes), ali.N.gz at a third of
    the frame rate for every alignment, num_jobs, phones.txt, frame_subsampling_factor; the
    monophone tree is said once; mkgraph.sh --self-loop-scale 1.0 builds a graph from the dir."""
    s5, lang = lang_chain
    tree = tmp_path / "tree"
    r = sh(f"steps/nnet3/chain/build_tree.sh --frame-subsampling-factor 3 --context-opts "
           f"'--context-width=2 --central-position=1' --cmd run.pl 200 {system.train} {lang} {system.ali} {tree}", s5)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("the tree is a monophone one") == 1 and "200-leaf tree of context width 2" in r.stderr
    for name in ("tree", "final.mdl", "0.trans_mdl", "ali.1.gz", "ali.2.gz", "num_jobs", "phones.txt",
                 "frame_subsampling_factor", "log/convert_ali.1.log"):
        assert (tree / name).is_file(), name
    assert (tree / "final.mdl").read_bytes() == (tree / "0.trans_mdl").read_bytes()
    assert (tree / "num_jobs").read_text().strip() == (system.ali / "num_jobs").read_text().strip()
    assert (tree / "frame_subsampling_factor").read_text() == "3\n"
    assert (tree / "phones.txt").read_bytes() == (lang / "phones.txt").read_bytes()
    os.remove(tree / "0.trans_mdl")                   # what Kaldi's tree dir has: final.mdl only
    tree_dir = read_chain_tree_dir(str(tree))
    assert read_transition_model(str(tree / "final.mdl")).num_pdfs == tree_dir.num_pdfs
    frames = feat_to_len(str(system.train / "feats.scp"))
    assert len(alignment_archives(str(tree))) == 2 and sorted(tree_dir.alignments) == sorted(frames)
    assert all(len(a) == (frames[k] + 2) // 3 for k, a in tree_dir.alignments.items())
    graph = tmp_path / "graph"
    r = sh(f"utils/mkgraph.sh --self-loop-scale 1.0 {system.lang_test} {tree} {graph}", s5)
    assert r.returncode == 0, r.stderr
    assert (graph / "HCLG.fst").is_file() and (graph / "num_pdfs").read_text().strip() == str(tree_dir.num_pdfs)


def test_build_tree_sh_monophone_request_is_quiet_and_bad_input_one_line(tmp_path, system, lang_chain):
    s5, lang = lang_chain
    r = sh(f"steps/nnet3/chain/build_tree.sh --context-opts '--context-width=1 --central-position=0' "
           f"10 {system.train} {lang} {system.ali} {tmp_path / 'tree'}", s5)
    assert r.returncode == 0 and "monophone one" not in r.stderr, r.stderr
    assert (tmp_path / "tree/frame_subsampling_factor").read_text() == "1\n"       # Kaldi's default
    r = sh(f"steps/nnet3/chain/build_tree.sh 200 {system.train} {system.lang} {system.ali} {tmp_path / 't2'}", s5)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("steps/nnet3/chain/build_tree.sh: ") and \
        "not gen_topo.py's chain topology" in r.stderr
    r = sh(f"steps/nnet3/chain/build_tree.sh 200 {tmp_path} {lang} {system.ali} {tmp_path / 't3'}", s5)
    assert r.returncode == 1 and "feats.scp: no such file" in r.stderr


def test_context_width():
    assert context_width("") == 3          # acc-tree-stats' default
    assert context_width("--context-width=2 --central-position=1") == 2
    assert context_width("--context-width 1") == 1
    with pytest.raises(PrepareError, match="needs an integer"):
        context_width("--context-width=x")
