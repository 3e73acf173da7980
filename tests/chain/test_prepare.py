"""`python -m kaldi_avg.chain.prepare` (docs/chain.md 8) and the text `Supervision` writer of
supervision_io: the writer against Kaldi's FSDD supervision archive; the command end to end on
the shared FSDD GMM system (tests/frontend/gmm_system.py, through egs/fsdd/s5/local/chain/prepare.sh)
and, with lattices, on Kaldi's FSDD fixture, where its supervisions are Kaldi's file byte for byte."""
from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldifst
import numpy as np
import pytest
import torch

from kaldi_avg.chain.prepare import PrepareError, main, parse_lm_opts
from kaldi_avg.chain.supervision_io import (
    Supervision,
    SupervisionFst,
    add_weight_to_supervision,
    merge_supervisions,
    parse_supervision_text,
    read_supervisions,
    supervision_text,
    write_supervisions,
)

from . import fixture
from .test_supervision import paths

REPO = Path(__file__).resolve().parents[2]


def rounded(found: list[tuple[tuple[int, ...], float]]) -> list[tuple[tuple[int, ...], float]]:
    """Paths compared up to the 3 decimals the text form keeps, in sorted order."""
    return sorted((labels, round(w, 3)) for labels, w in found)


def same_fst(a: SupervisionFst, b: SupervisionFst) -> bool:
    return a.num_states == b.num_states and all(np.array_equal(getattr(a, f), getattr(b, f))
                                                for f in ("src", "dst", "label", "weight", "final"))


# -- the writer ----------------------------------------------------------------------------------
def test_writer_gives_kaldis_archive_byte_for_byte(tmp_path):
    """Kaldi's supervision.20utt.txt, read and written again, is the same file (key, header
    tokens with their trailing spaces, tab-separated fstprint lines without One weights, the
    empty line, `</Supervision> ` and the next key on its line, no final newline)."""
    path = fixture("supervision.20utt.txt")
    items = list(read_supervisions(path))
    out = tmp_path / "sup.ark"
    assert write_supervisions(out, items) == 20
    assert out.read_bytes() == Path(path).read_bytes()
    back = list(read_supervisions(out))
    assert [k for k, _ in back] == [k for k, _ in items]
    assert all(same_fst(a.fsts[0], b.fsts[0]) for (_, a), (_, b) in zip(back, items))


def test_writer_round_trips_weights_and_merged_supervisions():
    """Weighted FSTs (normalized by normalization.fst) come back exactly with 9 digits and to
    Kaldi's 6 digits by default; several sequences are written as MergeSupervision's one FST and
    read back into FSTs with the same paths and weights."""
    items = dict(read_supervisions(fixture("supervision.20utt.txt")))
    sup = add_weight_to_supervision(items["george-0-00"], fixture("normalization.fst"))
    assert np.any(sup.fsts[0].weight != 0)
    (key, exact), = parse_supervision_text(supervision_text("u1", sup, precision=9))
    assert key == "u1" and same_fst(exact.fsts[0], sup.fsts[0])
    text = supervision_text("u1", sup)
    assert "\t" in text and "e+" not in text
    (_, close), = parse_supervision_text(text)
    np.testing.assert_allclose(close.fsts[0].weight, sup.fsts[0].weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(close.fsts[0].label, sup.fsts[0].label)
    same_len = [s for s in items.values() if s.frames_per_sequence == 21]
    assert len(same_len) >= 3
    merged = merge_supervisions([Supervision(1.0, 21, 64, s.fsts) for s in same_len[:3]])
    text = supervision_text("m", merged)
    assert text.startswith("m <Supervision> <Weight> 1 <NumSequences> 3 <FramesPerSeq> 21 <LabelDim> 64 "
                           "<End2End> F \n0\t") and text.endswith("\n\n</Supervision> ")
    (_, back), = parse_supervision_text(text)
    assert back.num_sequences == 3 and back.frames_per_sequence == 21
    for got, want in zip(back.fsts, merged.fsts):
        assert rounded(paths(got)) == rounded(paths(want))


def test_writer_refuses_bad_keys():
    sup = next(read_supervisions(fixture("supervision.20utt.txt")))[1]
    for key in ("", "two words"):
        with pytest.raises(ValueError, match="invalid key"):
            supervision_text(key, sup)


# -- options and bad input ------------------------------------------------------------------------
def test_lm_opts():
    o = parse_lm_opts("--num-extra-lm-states=2000 --ngram-order 3")
    assert (o.ngram_order, o.num_extra_lm_states, o.no_prune_ngram_order) == (3, 2000, 3)
    assert parse_lm_opts("").num_extra_lm_states == 1000
    with pytest.raises(PrepareError, match="unrecognized option --num-extra-states"):
        parse_lm_opts("--num-extra-states=2000")
    with pytest.raises(PrepareError, match="must be >= 2"):
        parse_lm_opts("--ngram-order=1")


@pytest.mark.parametrize("args, message", [
    (["a", "b"], "expected 4 arguments"),
    (["--left-tolerance=0", "--right-tolerance=0", "L", "A", "D", "C"], "left + right + 1 >= --frame-subsampling"),
    (["--lm-scale=0.5", "L", "A", "D", "C"], "--lm-scale needs --lat-dir"),
    (["--lm-opts", "--bogus=1", "L", "A", "D", "C"], "--lm-opts='--bogus=1': unrecognized option --bogus"),
    (["--stage=7", "{lang}", "{lang}", "{lang}", "{out}"], "--stage=7: must be 0 .. 4"),
    (["{nowhere}", "A", "D", "C"], "no such lang directory"),
    (["{lang}", "{lang}", "{lang}", "{out}"], "silence.csl: missing"),
    (["--stage=3", "{lang}", "{lang}", "{lang}", "{out}"], "tree: missing (stage 1's tree)"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    (tmp_path / "lang").mkdir()
    subst = {"lang": str(tmp_path / "lang"), "out": str(tmp_path / "out"), "nowhere": str(tmp_path / "nowhere")}
    assert main([a.format(**subst) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("python -m kaldi_avg.chain.prepare: error: "), err


# -- end to end ------------------------------------------------------------------------------------
def _fake_recipe(root: Path) -> Path:
    """A recipe dir with local/chain/prepare.sh, utils/ and a path.sh that puts this checkout first."""
    s5 = root / "s5"
    (s5 / "local" / "chain").mkdir(parents=True)
    shutil.copy(REPO / "egs/fsdd/s5/local/chain/prepare.sh", s5 / "local/chain/prepare.sh")
    (s5 / "utils").symlink_to(REPO / "utils")
    (s5 / "path.sh").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
                                f'export PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"\nexport LC_ALL=C\n')
    return s5


def _check_chain_dir(chain: Path, frames: dict[str, int], num_sups: int, f: int = 3) -> dict[str, Supervision]:
    """The files exist in Kaldi's formats; supervisions have (T + f - 1) / f frames and compose with
    normalization.fst; LF-MMI on random outputs is finite."""
    from kaldi_avg.chain.denominator import DenominatorGraph
    from kaldi_avg.chain.objective import ChainTrainingOptions, compute_chain_objf
    from kaldi_avg.chain.topology import read_chain_tree_dir
    fsts = {}
    for name in ("phone_lm.fst", "den.fst", "normalization.fst"):
        fsts[name] = kaldifst.StdVectorFst.read(str(chain / name))
        assert fsts[name] is not None and fsts[name].num_states > 0, name
    for log in ("gen_topo", "build_tree", "convert_ali.1", "make_phone_lm", "make_den_fst", "get_supervision.1"):
        assert "# Ended (code 0)" in (chain / "log" / f"{log}.log").read_text(), log
    tree_dir = read_chain_tree_dir(str(chain))
    assert (chain / "frame_subsampling_factor").read_text() == f"{f}\n"
    for key, ali in tree_dir.alignments.items():
        assert len(ali) == (frames[key] + f - 1) // f, key
    sups = {k: s for ark in sorted(chain.glob("supervision.*.ark")) for k, s in read_supervisions(ark)}
    assert len(sups) == num_sups and not list(chain.glob(".tmp.*"))
    norm = fsts["normalization.fst"]
    for key, sup in sups.items():
        assert sup.num_sequences == 1 and sup.label_dim == tree_dir.num_pdfs
        assert sup.frames_per_sequence == (frames[key] + f - 1) // f, key
        normalized = add_weight_to_supervision(sup, norm)
        assert normalized.fsts[0].num_states > 0 and np.isfinite(normalized.fsts[0].final).any(), key
    g = DenominatorGraph.from_fst(str(chain / "den.fst"), tree_dir.num_pdfs)
    gen = torch.Generator().manual_seed(0)
    for key in list(sups)[:5]:
        sup = add_weight_to_supervision(sups[key], norm)
        y = torch.randn(sup.frames_per_sequence, tree_dir.num_pdfs, generator=gen)
        r = compute_chain_objf(y, sup, g, ChainTrainingOptions())
        assert bool(r.ok) and math.isfinite(float(r.objf)) and float(r.objf) < 0, key
        assert torch.isfinite(r.nnet_output_deriv).all()
    return sups


def test_prepare_sh_on_the_fsdd_gmm_system(tmp_path):
    """local/chain/prepare.sh on the shared monophone GMM system (lang, 2-job alignments, MFCC data
    dir): every stage, then the checks of _check_chain_dir on all 300 supervisions."""
    from tests.frontend.gmm_system import gmm_system
    system = gmm_system()
    from kaldi_avg.chain.topology import gen_topo
    from kaldi_avg.frontend.lang import read_int_list
    from kaldi_avg.kaldi.datadir import feat_to_len
    data = tmp_path / "data"          # utterances and features of the shared train dir, left as they are
    data.mkdir()
    for name in ("utt2spk", "spk2utt", "feats.scp", "text"):
        shutil.copy(system.train / name, data / name)
    s5 = _fake_recipe(tmp_path)
    chain = tmp_path / "chain"
    r = subprocess.run(["bash", "local/chain/prepare.sh", "--lm-opts", "--num-extra-lm-states=2000",
                        str(system.lang), str(system.ali), str(data), str(chain)],
                       cwd=s5, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "KALDI_ROOT"})
    assert r.returncode == 0, r.stderr[-3000:]
    frames = feat_to_len(str(data / "feats.scp"))
    _check_chain_dir(chain, frames, len(frames))
    assert "300 supervisions in 2 archives (0 failed, 0 of the wrong length, 0 utterances" in r.stderr
    assert "--num-extra-lm-states=2000" in (chain / "log/make_phone_lm.log").read_text()
    nonsil = read_int_list(str(system.lang / "phones/nonsilence.csl"))
    sil = read_int_list(str(system.lang / "phones/silence.csl"))
    assert (chain / "lang/topo").read_text() == gen_topo(nonsil, sil)
    assert (chain / "lang/phones.txt").read_bytes() == (system.lang / "phones.txt").read_bytes()


@pytest.fixture()
def fixture_system(tmp_path):
    """Kaldi's FSDD fixture as a GMM system: a lang dir of its phones, an alignment dir and a
    lattice dir (lat_trans.mdl; the alignments one path of each lattice), a data dir of the 20
    utterances with their frame counts."""
    from kaldi_avg.chain.phone_lattice import phone_align_lattice
    from kaldi_avg.kaldi.lattice import read_compact_lattices
    from kaldi_avg.kaldi.tables import write_int_vector_table
    from kaldi_avg.kaldi.transition import read_transition_model
    lat_tm = read_transition_model(fixture("lat_trans.mdl"))
    lats = list(read_compact_lattices(fixture("lat.20utt.txt")))
    lang, ali, lat, data = (tmp_path / n for n in ("lang", "ali", "lat", "data"))
    (lang / "phones").mkdir(parents=True)
    shutil.copy(fixture("phones.txt"), lang / "phones.txt")
    (lang / "phones/silence.csl").write_text("1:2\n")
    (lang / "phones/nonsilence.csl").write_text(":".join(map(str, range(3, 22))) + "\n")
    for d in (ali, lat, data):
        d.mkdir()
    alis, frames = {}, {}
    for key, lattice in lats:
        aligned, _ = phone_align_lattice(lattice, lat_tm)
        s, tids = aligned.start, []
        while aligned.arcs[s]:
            _, w, s = aligned.arcs[s][-1]
            tids += w[2]
        alis[key] = np.asarray(tids, np.int32)
        frames[key] = lattice.state_times()[1]
        assert frames[key] == len(tids)
    write_int_vector_table(f"ark:{tmp_path}/ali.ark", alis.items())
    (ali / "ali.1.gz").write_bytes(gzip.compress((tmp_path / "ali.ark").read_bytes()))
    (lat / "lat.1.gz").write_bytes(gzip.compress(Path(fixture("lat.20utt.txt")).read_bytes()))
    for d in (ali, lat):
        shutil.copy(fixture("lat_trans.mdl"), d / "final.mdl")
        (d / "num_jobs").write_text("1\n")
    (data / "utt2spk").write_text("".join(f"{k} {k.split('-')[0]}\n" for k in frames))
    (data / "utt2num_frames").write_text("".join(f"{k} {n}\n" for k, n in frames.items()))
    return lang, ali, lat, data, frames


def test_prepare_with_lattices_gives_kaldis_supervisions(tmp_path, fixture_system, capsys):
    """--lat-dir: every stage on the fixture's lattices (a monophone tree of its phones); then, with
    Kaldi's tree and 0.trans_mdl in the chain dir, --stage 4 writes supervision.1.ark equal to
    Kaldi's supervision.20utt.txt byte for byte."""
    lang, ali, lat, data, frames = fixture_system
    chain = tmp_path / "chain"
    args = ["--lat-dir", str(lat), "--lm-opts=--num-extra-lm-states=2000", str(lang), str(ali), str(data), str(chain)]
    assert main(args) == 0, capsys.readouterr().err
    _check_chain_dir(chain, frames, 20)
    assert "20 supervisions in 1 archives" in capsys.readouterr().err
    assert "lattice-align-phones --replace-output-symbols=true" in (chain / "log/get_supervision.1.log").read_text()
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    for name in ("tree", "0.trans_mdl"):
        shutil.copy(fixture(name), kaldi / name)
    assert main(["--stage=4", *args[:-1], str(kaldi)]) == 0, capsys.readouterr().err
    assert (kaldi / "supervision.1.ark").read_bytes() == Path(fixture("supervision.20utt.txt")).read_bytes()


def test_supervision_length_mismatch_and_missing_utterances(tmp_path, fixture_system, capsys):
    """Utterances whose features are longer than the alignment by more than one output frame are
    left out (nnet3-chain-get-egs would drop them), data-dir utterances without an alignment are
    counted, alignments of other utterances ignored; none left is an error."""
    lang, ali, lat, data, frames = fixture_system
    keys = list(frames)
    lines = [f"{k} {frames[k] + (6 if i == 0 else 0)}\n" for i, k in enumerate(keys[:5])] + ["extra-utt 30\n"]
    (data / "utt2num_frames").write_text("".join(lines))
    (data / "utt2spk").write_text("".join(f"{line.split()[0]} spk\n" for line in lines))
    chain = tmp_path / "chain"
    assert main([str(lang), str(ali), str(data), str(chain)]) == 0
    err = capsys.readouterr().err
    assert "4 supervisions in 1 archives (0 failed, 1 of the wrong length, 1 utterances of" in err
    assert [k for k, _ in read_supervisions(chain / "supervision.1.ark")] == keys[1:5]
    assert f"WARNING: {keys[0]}: supervision has" in (chain / "log/get_supervision.1.log").read_text()
    (data / "utt2num_frames").write_text("other 30\n")
    (data / "utt2spk").write_text("other spk\n")
    assert main(["--stage=4", str(lang), str(ali), str(data), str(chain)]) == 1
    assert "no supervision for the utterances of" in capsys.readouterr().err
