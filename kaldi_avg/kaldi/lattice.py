"""Kaldi's CompactLattice: its weights and their semiring, and its archives (text and binary).

docs/chain.md 7.2. Kaldi: `src/fstext/lattice-weight.h` (`CompactLatticeWeight`: a pair of float
costs and a string of transition-ids; `Plus` keeps the better of two weights, `Times` adds the
costs and appends the strings) and `src/lat/kaldi-lattice.cc` (`CompactLatticeHolder`,
`LatticeReader::ReadText`).

An archive entry is the key, a space, then the lattice. A text lattice starts with a newline
and ends at an empty line (or the end of the archive): a CompactLattice has `src dst label
g,a,t1_t2_...` arcs and `state [g,a,tids]` finals, a Lattice `src dst ilabel olabel g,a` arcs and
`state [g,a]` finals; the first line's state is the start. A binary lattice has no `\\0B`
header (Kaldi's lattice holders leave it out so that one lattice per file reads as an OpenFst
file): it starts with OpenFst's magic number (first byte 214) and is a vector FST of arc type
`compactlattice44` (`compactlattice88` with doubles). `iter_lattice_entries` tells the two apart
per entry as `CompactLatticeHolder::Read` does; a text entry comes back as its lines because
which of the two text forms it is, and what the reader wants of it, is the caller's business
(`read_compact_lattices` reads CompactLattices, `frontend/lattice.read_lattice_archive` either).
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..errors import UsageError

FST_MAGIC = 2125659606
FST_MAGIC_FIRST_BYTE = struct.pack("<i", FST_MAGIC)[:1]    # b"\xd6" (214), as Kaldi checks
INF = float("inf")

# A CompactLatticeWeight: (graph cost, acoustic cost, transition-ids); None is Zero.
Weight = tuple[float, float, tuple[int, ...]]
ONE: Weight = (0.0, 0.0, ())


class LatticeError(UsageError):
    """A lattice or lattice archive that cannot be read or used (one line naming the file and
    the utterance)."""


def _f32(x: float) -> float:
    return float(np.float32(x))


def times(a: Weight | None, b: Weight | None) -> Weight | None:
    """`Times`: costs added in float, strings concatenated (Zero absorbs)."""
    if a is None or b is None:
        return None
    return (_f32(a[0] + b[0]), _f32(a[1] + b[1]), a[2] + b[2])


def compare(a: Weight, b: Weight) -> int:
    """`Compare` of CompactLatticeWeights (1: a is better, -1: b is, 0: equal): the smaller
    total cost (graph + acoustic, in float) wins, then the smaller graph cost, then the shorter
    string, then the lexicographically larger string (Kaldi's order)."""
    fa, fb = _f32(a[0] + a[1]), _f32(b[0] + b[1])
    if fa != fb:
        return 1 if fa < fb else -1
    if a[0] != b[0]:
        return 1 if a[0] < b[0] else -1
    if len(a[2]) != len(b[2]):
        return 1 if len(a[2]) < len(b[2]) else -1
    for x, y in zip(a[2], b[2]):
        if x != y:
            return -1 if x < y else 1
    return 0


def plus(a: Weight | None, b: Weight | None) -> Weight | None:
    """`Plus` of the CompactLattice semiring: the better weight (the first one on a tie)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if compare(a, b) >= 0 else b


# An arc: (label, weight, nextstate); CompactLattices are acceptors (ilabel == olabel).
Arc = tuple[int, Weight, int]


@dataclass
class CompactLattice:
    """A mutable CompactLattice: per-state arc lists and final weights (None: not final).
    `top_sorted_known` mirrors OpenFst's cached kTopSorted bit (as `AddArc` maintains it)."""
    start: int = -1
    arcs: list[list[Arc]] = field(default_factory=list)
    finals: list[Weight | None] = field(default_factory=list)
    top_sorted_known: bool = True

    @property
    def num_states(self) -> int:
        return len(self.arcs)

    @property
    def num_arcs(self) -> int:
        return sum(len(a) for a in self.arcs)

    def add_state(self) -> int:
        self.arcs.append([])
        self.finals.append(None)
        return len(self.arcs) - 1

    def add_arc(self, state: int, arc: Arc) -> None:
        if arc[2] <= state:
            self.top_sorted_known = False
        self.arcs[state].append(arc)

    def is_top_sorted(self) -> bool:
        return all(a[2] > s for s, arcs in enumerate(self.arcs) for a in arcs)

    def copy(self) -> CompactLattice:
        return CompactLattice(self.start, [list(a) for a in self.arcs], list(self.finals), self.top_sorted_known)

    def state_times(self) -> tuple[list[int], int]:
        """`CompactLatticeStateTimes`: each state's frame (the lattice must be topologically
        sorted with start 0) and the number of frames (-1 without a final state)."""
        if self.start != 0 or not self.is_top_sorted():
            raise LatticeError("lattice must be topologically sorted with start state 0")
        times = [-1] * self.num_states
        times[0] = 0
        length = -1
        for s, arcs in enumerate(self.arcs):
            for _, w, d in arcs:
                t = times[s] + len(w[2])
                if times[d] == -1:
                    times[d] = t
                elif times[d] != t:
                    raise LatticeError(f"lattice state {d} is reached at frames {times[d]} and {t}")
            if self.finals[s] is not None:
                length = max(length, times[s] + len(self.finals[s][2]))
        return times, length


# -- text form --------------------------------------------------------------------------------------
def _parse_weight(text: str, where: str) -> Weight:
    parts = text.split(",")
    if len(parts) != 3:
        raise LatticeError(f"{where}: bad CompactLattice weight {text!r} (expected graph,acoustic,tids)")
    try:
        tids = tuple(int(t) for t in parts[2].split("_")) if parts[2] else ()
        return (_f32(float(parts[0])), _f32(float(parts[1])), tids)
    except ValueError:
        raise LatticeError(f"{where}: bad CompactLattice weight {text!r}") from None


def parse_compact_lattice_text(lines: list[str], where: str = "lattice") -> CompactLattice:
    """A text CompactLattice (Kaldi's `ReadCompactLatticeText`): `src dst label [weight]` arcs,
    `state [weight]` finals; the first line's state is the start."""
    lat = CompactLattice()
    for line in lines:
        col = line.split()
        if not col:
            break
        try:
            s = int(col[0])
            d = int(col[1]) if len(col) >= 3 else s
        except ValueError:
            raise LatticeError(f"{where}: bad lattice line {line!r}") from None
        while max(s, d) >= lat.num_states:
            lat.add_state()
        if lat.start < 0:
            lat.start = s
        if len(col) == 1:
            lat.finals[s] = ONE
        elif len(col) == 2:
            lat.finals[s] = _parse_weight(col[1], where)
        elif len(col) in (3, 4):
            w = _parse_weight(col[3], where) if len(col) == 4 else ONE
            lat.add_arc(s, (int(col[2]), w, d))
        else:
            raise LatticeError(f"{where}: bad CompactLattice line {line!r} (a Lattice, not a CompactLattice?)")
    return lat


def is_compact_lattice_text(lines: list[str]) -> bool:
    """Whether a text lattice is a CompactLattice rather than a Lattice, from its first line that
    tells: arcs have 3 fields before the weight in a CompactLattice, 4 in a Lattice; a final
    weight has 3 comma-separated parts in a CompactLattice, 2 in a Lattice. (Kaldi's
    `LatticeReader::ReadText` reads both forms until one fails; on a well-formed lattice this is
    the same answer.) Only weightless finals: a Lattice (either reads the same)."""
    for line in lines:
        col = line.split()
        if not col:
            break
        weighted = "," in col[-1]
        fields = len(col) - weighted
        if fields >= 3:
            return fields == 3
        if weighted:
            return col[-1].count(",") == 2
    return False


def write_compact_lattice_text(key: str, lat: CompactLattice) -> str:
    """The text form Kaldi writes (`ark,t:`), with 9 significant digits (Kaldi prints 6) so that
    the float costs read back exactly."""
    def w(x: Weight) -> str:
        return f"{x[0]:.9g},{x[1]:.9g},{'_'.join(map(str, x[2]))}"
    out = io.StringIO()
    out.write(f"{key} \n")
    order = [lat.start] + [s for s in range(lat.num_states) if s != lat.start]
    for s in order:
        for label, wt, d in lat.arcs[s]:
            out.write(f"{s}\t{d}\t{label}\t{w(wt)}\n")
        if lat.finals[s] is not None:
            out.write(f"{s}\t{w(lat.finals[s])}\n")
    out.write("\n")
    return out.getvalue()


# -- binary form ------------------------------------------------------------------------------------
_STRUCTS: dict[str, struct.Struct] = {}


class _Reader:
    """Exact reads from an archive stream, with one byte of look-ahead (`peek`); `where` names
    the file and entry in errors."""

    def __init__(self, f: BinaryIO, where: str):
        self.f, self.where, self.ahead = f, where, b""

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if self.ahead:
            data, self.ahead = self.ahead + self.f.read(n - 1), b""
        else:
            data = self.f.read(n)
        if len(data) != n:
            raise LatticeError(f"{self.where}: binary lattice is cut off")
        return data

    def peek(self) -> bytes:
        """The next byte (b"" at the end), not consumed."""
        if not self.ahead:
            self.ahead = self.f.read(1)
        return self.ahead

    def skip(self) -> None:
        """Consumes the byte `peek` returned."""
        self.ahead = b""

    def readline(self) -> bytes:
        data, self.ahead = self.ahead, b""
        return data if data == b"\n" else data + self.f.readline()

    def take(self, fmt: str) -> tuple:
        s = _STRUCTS.get(fmt)
        if s is None:
            s = _STRUCTS[fmt] = struct.Struct(fmt)
        return s.unpack(self.read(s.size))

    def string(self) -> str:
        (n,) = self.take("<i")
        if not 0 <= n <= 1 << 16:
            raise LatticeError(f"{self.where}: bad string in the FST header")
        return self.read(n).decode("latin-1")


def _read_binary_compact_lattice(r: _Reader) -> CompactLattice:
    """OpenFst's VectorFst binary format with CompactLattice arcs (Kaldi's `ReadCompactLattice`
    binary branch): the FstHeader (magic, FST type, arc type, int32 version and flags, uint64
    properties, int64 start, state and arc counts), then per state its final weight, int64 arc
    count and arcs (int32 ilabel, olabel, weight, int32 nextstate); a weight is two floats
    (doubles for `compactlattice88`), an int32 length and that many int32 transition-ids."""
    (magic,) = r.take("<i")
    if magic != FST_MAGIC:
        raise LatticeError(f"{r.where}: not a binary FST (no OpenFst magic number)")
    fst_type, arc_type = r.string(), r.string()
    if fst_type != "vector":
        raise LatticeError(f"{r.where}: unsupported FST type {fst_type!r} (Kaldi reads vector FSTs)")
    if arc_type not in ("compactlattice44", "compactlattice88"):
        raise LatticeError(f"{r.where}: arc type {arc_type!r} is not a CompactLattice")
    costs_fmt = "<ffi" if arc_type == "compactlattice44" else "<ddi"
    _version, flags, _props, start, num_states, _num_arcs = r.take("<iiQqqq")
    if flags & 3:
        raise LatticeError(f"{r.where}: lattices with symbol tables are not read")
    if num_states < 0:
        raise LatticeError(f"{r.where}: streamed FSTs (unknown number of states) are not read")

    def weight() -> Weight | None:
        g, a, n = r.take(costs_fmt)
        if n < 0:
            raise LatticeError(f"{r.where}: negative string size in a lattice weight")
        tids = r.take(f"<{n}i")
        if g == INF:
            return None
        return (_f32(g), _f32(a), tids)

    lat = CompactLattice(start=start)
    for s in range(num_states):
        lat.add_state()
        lat.finals[s] = weight()
        (n,) = r.take("<q")
        for _ in range(n):
            il, _ol = r.take("<ii")
            w = weight()
            (d,) = r.take("<i")
            lat.arcs[s].append((il, w, d))
    lat.top_sorted_known = lat.is_top_sorted()
    return lat


# -- archives ---------------------------------------------------------------------------------------
# A binary entry read as a CompactLattice, or a text entry's lines (a Lattice or a CompactLattice).
LatticeEntry = CompactLattice | list[str]


def entry_where(where: str, key: str) -> str:
    """How errors name an archive's entry."""
    return f"{where}: utterance {key}"


def iter_lattice_entries(f: BinaryIO | bytes, where: str) -> Iterator[tuple[str, LatticeEntry]]:
    """(key, entry) of a Kaldi lattice archive (module docstring): binary entries read as
    CompactLattices, text ones as their lines (without the empty line that ends them)."""
    r = _Reader(io.BytesIO(f) if isinstance(f, bytes) else f, where)
    while True:
        r.where = where
        while (c := r.peek()) and c.isspace():
            r.skip()
        if not c:
            return
        key = bytearray()
        while (c := r.peek()) and c != b" ":
            if c.isspace():
                raise LatticeError(f"{where}: expected a space after the key {key.decode(errors='replace')!r}")
            key += c
            r.skip()
        r.skip()
        try:
            utt = key.decode()
        except UnicodeDecodeError:
            raise LatticeError(f"{where}: a key that is not UTF-8 ({bytes(key[:40])!r})") from None
        r.where = entry_where(where, utt)
        c = r.peek()
        if not c:
            raise LatticeError(f"{r.where}: the archive ends after the key")
        if c == FST_MAGIC_FIRST_BYTE:
            yield utt, _read_binary_compact_lattice(r)
            continue
        if not c.isspace() or r.readline().strip():
            raise LatticeError(f"{r.where}: expected a newline (a text lattice) or an OpenFst magic number "
                               f"(a binary one) after the key")
        lines = []
        while (line := r.readline()).strip():
            try:
                lines.append(line.decode().rstrip("\r\n"))
            except UnicodeDecodeError:
                raise LatticeError(f"{r.where}: a lattice line that is not UTF-8") from None
        yield utt, lines


def read_lattice_entries(path: str) -> Iterator[tuple[str, LatticeEntry]]:
    """`iter_lattice_entries` of a file, gzipped (`lat.N.gz`) or plain; a broken gzip stream is
    a LatticeError naming the file (a file that cannot be opened stays an OSError)."""
    with open(path, "rb") as raw:
        try:
            f: BinaryIO = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
            with f:
                yield from iter_lattice_entries(f, path)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise LatticeError(f"{path}: unreadable gzip stream ({e})") from None


def _compact_lattices(entries: Iterator[tuple[str, LatticeEntry]], where: str
                      ) -> Iterator[tuple[str, CompactLattice]]:
    for key, entry in entries:
        if isinstance(entry, list):
            entry = parse_compact_lattice_text(entry, entry_where(where, key))
        yield key, entry


def iter_compact_lattices(f: BinaryIO | bytes, where: str) -> Iterator[tuple[str, CompactLattice]]:
    """(key, lattice) of an archive of CompactLattices, text or binary entries."""
    return _compact_lattices(iter_lattice_entries(f, where), where)


def read_compact_lattices(path: str | os.PathLike) -> Iterator[tuple[str, CompactLattice]]:
    """A lattice archive (`lat.N.gz` gzipped or plain, binary or text entries)."""
    path = os.fspath(path)
    return _compact_lattices(read_lattice_entries(path), path)


__all__ = ["CompactLattice", "LatticeEntry", "LatticeError", "ONE", "Weight", "compare", "entry_where",
           "is_compact_lattice_text", "iter_compact_lattices", "iter_lattice_entries", "parse_compact_lattice_text",
           "plus", "read_compact_lattices", "read_lattice_entries", "times", "write_compact_lattice_text"]
