"""Kaldi lattice archives (`lat.JOB.gz`) read for scoring, and lattice best paths.

An archive entry (kaldi_avg/kaldi/lattice.py, docs/chain.md 7.2) is one of: a text Lattice, as
our decoders write (`utt \\n`, one line per arc `src dst ilabel olabel graph_cost,acoustic_cost`,
one per final state `state graph,acoustic`, then an empty line; the first line's source is the
start state); a text CompactLattice (`lattice-copy ark,t:`: arcs `src dst word g,a,tids`, finals
`state g,a,tids`); a binary CompactLattice, what Kaldi's decoders write (`steps/nnet3/decode.sh`'s
lat.JOB.gz). `read_lattice_archive` tells them apart per entry and gives each as a `Lattice`:
per arc its source, destination, word (the output label; a CompactLattice's label) and the two
costs. The transition-ids of a CompactLattice do not matter to a best path and are dropped.

`best_paths` is `lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty
--word-ins-penalty=WIP | lattice-best-path` for several (LMWT, WIP) pairs at once: the best
path minimises graph + WIP * (number of words) + acoustic / LMWT.
"""
from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_path
from ..kaldi.lattice import (
    CompactLattice,
    LatticeError,
    entry_where,
    is_compact_lattice_text,
    parse_compact_lattice_text,
    read_lattice_entries,
)


@dataclass
class Lattice:
    start: int
    src: np.ndarray        # per arc
    dst: np.ndarray
    olabel: np.ndarray
    graph: np.ndarray
    acoustic: np.ndarray
    finals: dict[int, tuple[float, float]]


def write_lattice_archive(path: str, lattices: Iterable[tuple[str, str]]) -> int:
    """Writes (utt, lattice text) entries gzipped; empty lattices are left out."""
    n = 0
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        for utt, text in lattices:
            if text:
                f.write(f"{utt} \n{text}\n\n")
                n += 1
    return n


def _lattice(start: int, ints: np.ndarray, costs: np.ndarray, finals: dict[int, tuple[float, float]],
             where: str) -> Lattice:
    """A Lattice from arcs (src, dst, word) and their (graph, acoustic) costs."""
    ints, costs = ints.reshape(-1, 3), costs.reshape(-1, 2)
    if np.any(ints[:, 1] == start):
        raise LatticeError(f"{where}: an arc enters the start state (not a decoder lattice)")
    return Lattice(start, ints[:, 0], ints[:, 1], ints[:, 2], costs[:, 0], costs[:, 1], finals)


def parse_lattice(lines: list[str], where: str) -> Lattice:
    """A text Lattice (arcs `src dst ilabel olabel [g,a]`, finals `state [g,a]`)."""
    if not lines:
        raise LatticeError(f"{where}: empty lattice")
    arcs, finals = [], {}
    for line in lines:
        f = line.replace(",", " ").split()
        if len(f) == 6:
            arcs.append(f)
        elif len(f) == 4 and "," not in line:
            arcs.append(f + ["0", "0"])   # an arc with weight One
        elif len(f) in (1, 3):
            finals[int(f[0])] = (float(f[1]), float(f[2])) if len(f) == 3 else (0.0, 0.0)
        else:
            raise LatticeError(f"{where}: bad lattice line {line!r} (neither a text Lattice nor a "
                               f"CompactLattice line)")
    try:
        a = np.asarray(arcs, np.float64).reshape(-1, 6)
    except ValueError:
        raise LatticeError(f"{where}: non-numeric field in the lattice") from None
    return _lattice(int(lines[0].split()[0]), a[:, [0, 1, 3]].astype(np.int64), a[:, 4:], finals, where)


def from_compact_lattice(lat: CompactLattice, where: str) -> Lattice:
    """A CompactLattice as a Lattice on its words (arcs of weight Zero are left out)."""
    if lat.start < 0:
        raise LatticeError(f"{where}: empty lattice")
    ints = [(s, d, label) for s, arcs in enumerate(lat.arcs) for label, w, d in arcs if w is not None]
    costs = [w[:2] for arcs in lat.arcs for _, w, _ in arcs if w is not None]
    finals = {s: w[:2] for s, w in enumerate(lat.finals) if w is not None}
    return _lattice(lat.start, np.asarray(ints, np.int64), np.asarray(costs, np.float64), finals, where)


def read_lattice_archive(path: str) -> Iterator[tuple[str, Lattice]]:
    """(utterance, Lattice) of a lattice archive, gzipped or not, whatever its entries' kinds
    (module docstring)."""
    try:
        for utt, entry in read_lattice_entries(path):
            where = entry_where(path, utt)
            if isinstance(entry, CompactLattice):
                yield utt, from_compact_lattice(entry, where)
            elif is_compact_lattice_text(entry):
                yield utt, from_compact_lattice(parse_compact_lattice_text(entry, where), where)
            else:
                yield utt, parse_lattice(entry, where)
    except (OSError, ValueError) as e:
        if isinstance(e, LatticeError):
            raise
        raise LatticeError(f"{path}: cannot read the lattice archive ({e})") from None


def best_paths(lat: Lattice, lm_weights: list[float], penalties: list[float], where: str = "lattice"
               ) -> dict[tuple[float, float], list[int]]:
    """{(lmwt, wip): word ids of the best path} for every pair.

    One Viterbi pass for all pairs at once.  States are visited in waves of Kahn's topological
    sort (a wave = the states whose predecessors are all done), so each wave is a handful of
    array operations rather than a Python loop over states."""
    pairs = [(lmwt, wip) for wip in penalties for lmwt in lm_weights]
    inv = np.asarray([1.0 / lmwt for lmwt, _ in pairs])
    wips = np.asarray([wip for _, wip in pairs])
    n = 1 + max([lat.start, *lat.finals, int(lat.src.max(initial=0)), int(lat.dst.max(initial=0))])
    arc_cost = (lat.graph[:, None] + wips[None, :] * (lat.olabel[:, None] != 0)
                + lat.acoustic[:, None] * inv[None, :])
    by_dst = np.argsort(lat.dst, kind="stable")
    dst_sorted = lat.dst[by_dst]
    best = np.full((n, len(pairs)), np.inf)
    back = np.full((n, len(pairs)), -1, np.int64)
    best[lat.start] = 0.0
    indegree = np.bincount(lat.dst, minlength=n)
    wave = np.flatnonzero(indegree == 0)
    done = 0
    while wave.size:
        done += wave.size
        in_wave = np.zeros(n, bool)
        in_wave[wave] = True
        arcs = by_dst[in_wave[dst_sorted]]             # arcs into this wave, grouped by destination
        if arcs.size:
            dsts = lat.dst[arcs]
            starts = np.flatnonzero(np.diff(dsts, prepend=-1))
            cand = best[lat.src[arcs]] + arc_cost[arcs]
            mins = np.minimum.reduceat(cand, starts, axis=0)
            lengths = np.diff(starts, append=arcs.size)
            pos = np.where(cand == np.repeat(mins, lengths, axis=0), np.arange(arcs.size)[:, None], arcs.size)
            first = np.minimum.reduceat(pos, starts, axis=0)
            best[dsts[starts]] = mins
            back[dsts[starts]] = np.where(np.isfinite(mins), arcs[np.minimum(first, arcs.size - 1)], -1)
        released = np.bincount(lat.dst[in_wave[lat.src]], minlength=n)
        indegree -= released
        wave = np.flatnonzero((indegree == 0) & (released > 0))
    if done != n:
        raise LatticeError(f"{where}: the lattice has a cycle")
    finals = np.asarray(sorted(lat.finals), np.int64)
    final_cost = np.asarray([lat.finals[s] for s in finals.tolist()], np.float64).reshape(-1, 2)
    total = best[finals] + final_cost[:, :1] + final_cost[:, 1:] * inv[None, :]
    k = np.argmin(total, axis=0)
    out = {}
    for j, pair in enumerate(pairs):
        if not np.isfinite(total[k[j], j]):
            raise LatticeError(f"{where}: no final state is reachable")
        words, s = [], int(finals[k[j]])
        while (i := int(back[s, j])) >= 0:
            if lat.olabel[i] != 0:
                words.append(int(lat.olabel[i]))
            s = int(lat.src[i])
        out[pair] = words[::-1]
    return out
