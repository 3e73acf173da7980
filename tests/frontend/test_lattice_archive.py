"""The lattice archives scoring reads (kaldi_avg/frontend/lattice.py over kaldi_avg/kaldi/lattice.py):
text Lattices (our decoders), text CompactLattices (`lattice-copy ark,t:`) and binary
CompactLattices (Kaldi's decoders' lat.JOB.gz), gzipped or not, give the same best paths; the
binary bytes are built here as Kaldi writes them and checked against Kaldi's own where
$KALDI_ROOT is set, as are the best paths (against `lattice-best-path`)."""
from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess

import numpy as np
import pytest

from kaldi_avg.errors import UsageError
from kaldi_avg.frontend.lattice import best_paths, read_lattice_archive, write_lattice_archive
from kaldi_avg.frontend.score import score_kaldi
from kaldi_avg.kaldi.lattice import (
    CompactLattice,
    LatticeError,
    parse_compact_lattice_text,
    read_compact_lattices,
)
from tests.chain import fixture

# One lattice three ways: words 1 2 (graph 8, acoustic 20) or word 3 (graph 1.5, acoustic 40), an
# epsilon arc before the final state on each path; costs exact in float32.
TEXT_LATTICE = ["0\t1\t5\t1\t4,10", "1\t2\t6\t2\t4,10", "2\t4\t7\t0\t0,0", "0\t3\t7\t3\t1,40",
                "3\t4\t8\t0\t0.5,0", "4\t0.25,0"]
TEXT_COMPACT = ["0\t1\t1\t4,10,5", "1\t2\t2\t4,10,6", "2\t4\t0\t0,0,7", "0\t3\t3\t1,40,7",
                "3\t4\t0\t0.5,0,8", "4\t0.25,0,"]
LMWTS, WIPS = [1, 2, 10], [0.0, 30.0]
EXPECTED = {(1, 0.0): [1, 2], (2, 0.0): [1, 2], (10, 0.0): [3],   # 8 + 20/w vs 1.5 + 40/w
            (1, 30.0): [3], (2, 30.0): [3], (10, 30.0): [3]}     # two words cost 60, one 30


def binary_entry(key: str, lat: CompactLattice, properties: int = 0) -> bytes:
    """`key ` and the lattice as Kaldi's `lattice-copy ark:` writes it: no `\\0B` (the lattice
    holders write OpenFst's own format), an FstHeader (magic, "vector", "compactlattice44",
    version 2, flags 0, properties, start, states, and 0 for the arc count, which OpenFst's
    `VectorFst::WriteFst` leaves unset), then per state its final weight, arc
    count and arcs (ilabel = olabel, weight, nextstate); a weight = two floats, an int32 count,
    the transition-ids; Zero = infinite costs and no string."""
    def weight(w):
        if w is None:
            return struct.pack("<ffi", np.inf, np.inf, 0)
        return struct.pack(f"<ffi{len(w[2])}i", w[0], w[1], len(w[2]), *w[2])

    def string(s: bytes) -> bytes:
        return struct.pack("<i", len(s)) + s

    header = (struct.pack("<i", 2125659606) + string(b"vector") + string(b"compactlattice44")
              + struct.pack("<iiQqqq", 2, 0, properties, lat.start, lat.num_states, 0))
    body = b"".join(weight(lat.finals[s]) + struct.pack("<q", len(arcs))
                    + b"".join(struct.pack("<ii", lab, lab) + weight(w) + struct.pack("<i", d) for lab, w, d in arcs)
                    for s, arcs in enumerate(lat.arcs))
    return key.encode() + b" " + header + body


def properties_at(key: str) -> int:
    """Offset of the header's properties word in `binary_entry(key, ...)`."""
    return len(key) + 1 + 4 + (4 + 6) + (4 + 16) + 4 + 4


def text_entry(key: str, lines: list[str]) -> bytes:
    return (f"{key} \n" + "".join(f"{line}\n" for line in lines) + "\n").encode()


def arcs_of(lat) -> list:
    return sorted(zip(lat.src.tolist(), lat.dst.tolist(), lat.olabel.tolist(), lat.graph.tolist(),
                      lat.acoustic.tolist()))


def test_text_lattice_text_compact_lattice_and_binary_give_the_same_best_paths(tmp_path):
    compact = parse_compact_lattice_text(TEXT_COMPACT)
    write_lattice_archive(str(tmp_path / "lat.1.gz"), [("u", "\n".join(TEXT_LATTICE))])
    (tmp_path / "lat.2").write_bytes(text_entry("u", TEXT_COMPACT))                 # plain, not gzipped
    (tmp_path / "lat.3.gz").write_bytes(gzip.compress(binary_entry("u", compact)))
    # one archive with all three kinds, told apart per entry (binary ones have no newline after)
    mixed = binary_entry("b", compact) + text_entry("l", TEXT_LATTICE) + binary_entry("b2", compact) \
        + text_entry("c", TEXT_COMPACT)
    (tmp_path / "lat.4.gz").write_bytes(gzip.compress(mixed))
    lats = {}
    for name in ("lat.1.gz", "lat.2", "lat.3.gz", "lat.4.gz"):
        for utt, lat in read_lattice_archive(str(tmp_path / name)):
            lats[f"{name}:{utt}"] = lat
    assert sorted(lats) == ["lat.1.gz:u", "lat.2:u", "lat.3.gz:u", "lat.4.gz:b", "lat.4.gz:b2", "lat.4.gz:c",
                            "lat.4.gz:l"]
    reference = lats["lat.1.gz:u"]
    for where, lat in lats.items():
        assert lat.start == 0 and lat.finals == {4: (0.25, 0.0)}, where
        assert arcs_of(lat) == arcs_of(reference), where
        assert best_paths(lat, LMWTS, WIPS, where) == EXPECTED, where
    # the binary entries read as their text form on the CompactLattice side as well
    for name in ("lat.2", "lat.3.gz"):
        (utt, got), = read_compact_lattices(str(tmp_path / name))
        assert (utt, got.start, got.arcs, got.finals) == ("u", 0, compact.arcs, compact.finals)


def test_kaldi_written_compact_lattices_read_in_both_forms(tmp_path):
    """The fixture's lat.20utt.txt (Kaldi's `lattice-copy ark,t:` of tri1's lattices) as text and
    as the binary form built from it: the same lattices, each with a one-word best path."""
    path = fixture("lat.20utt.txt")
    text = dict(read_lattice_archive(path))
    compact = dict(read_compact_lattices(path))
    assert len(text) == 20 and list(text) == list(compact)
    (tmp_path / "lat.1.gz").write_bytes(gzip.compress(b"".join(binary_entry(k, v) for k, v in compact.items())))
    binary = dict(read_lattice_archive(str(tmp_path / "lat.1.gz")))
    assert list(binary) == list(text)
    for utt, lat in text.items():
        assert arcs_of(binary[utt]) == arcs_of(lat) and binary[utt].finals == lat.finals, utt
        paths = best_paths(lat, LMWTS, WIPS, utt)
        assert paths == best_paths(binary[utt], LMWTS, WIPS, utt), utt
        assert all(len(words) == 1 for words in paths.values()), (utt, paths)


def test_score_kaldi_scores_binary_lattices(tmp_path):
    """steps/score_kaldi.sh on a decode dir of Kaldi-style binary lattices."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "text").write_text("u one two\nv one two\n")
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "words.txt").write_text("<eps> 0\none 1\ntwo 2\nthree 3\n")
    (tmp_path / "decode").mkdir()
    compact = parse_compact_lattice_text(TEXT_COMPACT)
    (tmp_path / "decode" / "lat.1.gz").write_bytes(gzip.compress(binary_entry("u", compact) + binary_entry("v", compact)))
    result, lmwt, wip = score_kaldi(str(tmp_path / "data"), str(tmp_path / "graph"), str(tmp_path / "decode"),
                                    1, 10, (0.0,))
    # LM weights 1 to 3 give "one two" (8 + 20 / 3 < 1.5 + 40 / 3), 4 and more "three"
    assert (result.errors, result.words, result.sentences, lmwt, wip) == (0, 4, 2, 1, 0.0)


def test_errors_name_the_file_and_the_utterance(tmp_path):
    compact = parse_compact_lattice_text(TEXT_COMPACT)
    good = text_entry("a", TEXT_LATTICE)
    cases = {
        "cut": (good + binary_entry("b", compact)[:-7], "utterance b: binary lattice is cut off"),
        "header": (good + b"b \0B" + binary_entry("b", compact)[2:], "utterance b: expected a newline"),
        "arc type": (binary_entry("b", compact).replace(b"compactlattice44", b"compactlattice4x"),
                     "utterance b: arc type 'compactlattice4x' is not a CompactLattice"),
        "line": (good + text_entry("c", ["0 1 2 3 4 5 6"]), "utterance c: bad lattice line"),
        "compact line": (text_entry("c", ["0\t1\t2\t1,2,3", "0\t1\t2\t3\t1,2", "1"]),
                         "utterance c: bad CompactLattice line"),
        "no space": (b"c\n0 1 2 3\n1\n\n", "expected a space after the key"),
        "end": (good + b"c ", "utterance c: the archive ends after the key"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.gz"
        path.write_bytes(gzip.compress(data))
        with pytest.raises(LatticeError, match=f"^{path}: {message}") as e:
            list(read_lattice_archive(str(path)))
        assert isinstance(e.value, UsageError) and "\n" not in str(e.value), name
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(LatticeError, match=f"^{path}: "):
        list(read_lattice_archive(str(path)))
    with pytest.raises(LatticeError, match="cannot read the lattice archive"):
        list(read_lattice_archive(str(tmp_path / "missing.gz")))


# -- against Kaldi --------------------------------------------------------------------------------
KALDI_ROOT = os.environ.get("KALDI_ROOT")
needs_kaldi = pytest.mark.skipif(not KALDI_ROOT or not os.path.exists(f"{KALDI_ROOT}/src/latbin/lattice-best-path"),
                                 reason="needs a Kaldi build ($KALDI_ROOT/src/latbin)")


def kaldi(command: str) -> bytes:
    env = {**os.environ, "PATH": f"{KALDI_ROOT}/src/latbin:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, check=True,
                          capture_output=True).stdout


def random_lattices(seed: int, count: int) -> dict[str, list[str]]:
    """Text CompactLattices: random DAGs over words 0 (epsilon) .. 9, costs with 6 significant
    digits, some states with final weights, transition-id strings of 0-3 ids."""
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        n = rng.randint(3, 12)
        lines = []
        for s in range(n - 1):
            for d in sorted(rng.sample(range(s + 1, n), min(n - 1 - s, rng.randint(1, 3)))):
                tids = "_".join(str(rng.randint(1, 50)) for _ in range(rng.randint(0, 3)))
                lines.append(f"{s}\t{d}\t{rng.randint(0, 9)}\t{rng.uniform(-2, 8):.6g},{rng.uniform(-50, 200):.6g},{tids}")
            if rng.random() < 0.15:
                lines.append(f"{s}\t{rng.uniform(0, 3):.6g},{rng.uniform(0, 20):.6g},")
        lines.append(f"{n - 1}\t{rng.uniform(0, 3):.6g},0,")
        out[f"utt{i:03d}"] = lines
    return out


@needs_kaldi
def test_against_kaldi_lattice_copy_and_lattice_best_path(tmp_path):
    """Kaldi writes the fixture's and 40 random lattices as binary CompactLattices (`lattice-copy
    ark:`, what its decoders write) and as text Lattices (`--write-compact=false`); our binary
    bytes equal Kaldi's but for the header's properties word; all forms give the best paths of
    `lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty --word-ins-penalty=WIP |
    lattice-best-path` (score_kaldi.sh's pipeline)."""
    with open(fixture("lat.20utt.txt"), "rb") as f:
        text = f.read() + b"".join(text_entry(k, v) for k, v in random_lattices(7, 40).items())
    (tmp_path / "clat.txt").write_bytes(text)
    kaldi(f"lattice-copy ark:{tmp_path}/clat.txt 'ark:|gzip -c > {tmp_path}/lat.1.gz'")
    kaldi(f"lattice-copy --write-compact=false ark:{tmp_path}/clat.txt ark,t:{tmp_path}/lat.2")
    kaldis_bytes = gzip.decompress((tmp_path / "lat.1.gz").read_bytes())
    ours = dict(read_compact_lattices(str(tmp_path / "clat.txt")))
    assert len(ours) == 60
    at = 0
    for key, lat in ours.items():
        entry = binary_entry(key, lat)
        kaldis = kaldis_bytes[at:at + len(entry)]
        p = properties_at(key)
        assert kaldis[:p] + kaldis[p + 8:] == entry[:p] + entry[p + 8:], key
        at += len(entry)
    assert at == len(kaldis_bytes)
    forms = {name: dict(read_lattice_archive(str(tmp_path / name))) for name in ("clat.txt", "lat.1.gz", "lat.2")}
    assert all(list(lats) == list(ours) for lats in forms.values())
    for lmwt in (1, 10, 17):
        for wip in (0.0, 1.0):
            out = kaldi(f"lattice-scale --inv-acoustic-scale={lmwt} 'ark:gunzip -c {tmp_path}/lat.1.gz|' ark:- | "
                        f"lattice-add-penalty --word-ins-penalty={wip} ark:- ark:- | "
                        "lattice-best-path ark:- ark,t:-").decode()
            kaldis = {line.split()[0]: [int(w) for w in line.split()[1:]] for line in out.splitlines()}
            assert list(kaldis) == list(ours)
            for name, lats in forms.items():
                for key, lat in lats.items():
                    assert best_paths(lat, [lmwt], [wip], key)[(lmwt, wip)] == kaldis[key], (name, key, lmwt, wip)
