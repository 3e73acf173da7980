"""Kaldi tables (archives and scripts) read and written through kaldiio.

docs/kaldi-formats.md 1.6 and 1.8. kaldiio decodes the binary objects (FM/DM/CM/CM2/CM3 and
int32 vectors) and runs pipes; the helpers here fill its gaps:
* rspecifier/wspecifier options Kaldi accepts (`s`, `cs`, `p`, `o`, `bg`, `b`, `f`, ...);
* text archives (kaldiio guesses an integer dtype from the first number and then fails);
* truncated entries (kaldiio returns short vectors or raises bare asserts), reported with the
  file and the key;
* `[r1:r2,c1:c2]` ranges outside the matrix (kaldiio clips silently, Kaldi refuses);
* failing pipe commands (kaldiio ignores their exit status);
* matrix shapes without decoding the data (`feat-to-len`);
* atomic writes of plain-file archives and their scp.
"""
from __future__ import annotations

import io
import logging
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from kaldiio.matio import read_matrix_or_vector, read_token, write_array
from kaldiio.utils import MultiFileDescriptor, open_like_kaldi

from ..atomic import FILE_MODE
from .binary import KaldiFormatError

log = logging.getLogger(__name__)

_READ_OPTIONS = {"t", "b", "s", "ns", "cs", "ncs", "p", "np", "o", "no", "bg"}
_WRITE_OPTIONS = {"t", "b", "f", "nf", "p"}
# kaldiio raises these (or bare asserts) on short or garbled data.
_DECODE_ERRORS = (ValueError, AssertionError, struct.error, EOFError, OSError, RuntimeError)


@dataclass(frozen=True)
class Specifier:
    """A parsed rspecifier/wspecifier: `ark`/`scp` targets plus option letters."""
    ark: str | None
    scp: str | None
    options: frozenset[str]

    @property
    def text(self) -> bool:
        return "t" in self.options

    @property
    def permissive(self) -> bool:
        return "p" in self.options


def parse_specifier(spec: str, for_writing: bool = False) -> Specifier:
    """Parses `ark,s,cs:x.ark`, `scp:feats.scp`, `ark,scp:a.ark,a.scp`, `ark:gunzip -c a.gz|`."""
    if ":" not in spec:
        raise ValueError(f"not a Kaldi {'w' if for_writing else 'r'}specifier "
                         f"(expected e.g. ark:file or scp:file): {spec!r}")
    head, target = spec.split(":", 1)
    kinds = [x.strip() for x in head.split(",")]
    allowed = _WRITE_OPTIONS if for_writing else _READ_OPTIONS
    bad = [k for k in kinds if k not in allowed | {"ark", "scp"}]
    if bad:
        raise ValueError(f"unknown option(s) {bad} in specifier {spec!r}")
    ark, scp = "ark" in kinds, "scp" in kinds
    if not (ark or scp):
        raise ValueError(f"specifier {spec!r} names neither ark nor scp")
    if ark and scp:
        if not for_writing:
            raise ValueError(f"an rspecifier is either ark or scp, not both: {spec!r}")
        if kinds.index("ark") > kinds.index("scp"):
            raise ValueError(f"write ark,scp (in that order) with targets ark,scp: {spec!r}")
        parts = target.split(",", 1)
        if len(parts) != 2:
            raise ValueError(f"ark,scp needs two targets 'x.ark,x.scp': {spec!r}")
        return Specifier(parts[0], parts[1], frozenset(k for k in kinds if k in allowed))
    if scp and for_writing:
        raise ValueError(f"writing only an scp is not supported; use ark,scp: {spec!r}")
    if not target:
        raise ValueError(f"specifier {spec!r} has an empty target")
    opts = frozenset(k for k in kinds if k in allowed)
    return Specifier(target if ark else None, target if scp else None, opts)


def is_pipe(name: str) -> bool:
    s = name.strip()
    return s.endswith("|") or s.startswith("|")


# -- reading ------------------------------------------------------------------------------

class _CountingReader:
    """File-like wrapper that counts consumed bytes, to detect truncated objects."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        return data


@contextmanager
def _open_input(name: str):
    """Opens a file, `-` or `cmd |`; a command that fails is an error (Kaldi checks this too)."""
    try:
        f = open_like_kaldi(name, "rb")
    except OSError as e:
        raise KaldiFormatError(f"cannot open {name!r}: {e}") from None
    completed = False
    try:
        yield f
        completed = True
    finally:
        status = f.close()
        # A reader that stops early makes the writer of a pipe die of SIGPIPE; only a pipe
        # that was read to the end must have succeeded.
        if completed and is_pipe(name) and status:
            raise KaldiFormatError(f"command {name!r} exited with status {status >> 8}")


def _parse_text_numbers(text: str, what: str) -> np.ndarray:
    try:
        return np.asarray([float(x) for x in text.split()], dtype=np.float64)
    except ValueError:
        raise ValueError(f"non-numeric value in text {what}") from None


def _read_text_object(stream, head: bytes):
    """Text entry after its key: ` [ rows ]` (matrix, or vector on one line) or `1 2 3` (ints)."""
    line = head + stream.readline()
    if not line.strip():
        raise EOFError("no object after the key")
    body = line.decode("utf-8").lstrip(" \t")
    if not body.startswith("["):
        if not line.endswith(b"\n"):
            raise EOFError("text integer vector has no terminating newline")
        try:
            return np.asarray([int(x) for x in body.split()], dtype=np.int32)
        except ValueError:
            raise ValueError("text integer vector has a non-integer element") from None
    body = body[1:]
    if "]" in body:  # ` [ 1 2 ]`: a vector on one line (or an empty matrix `[ ]`)
        inner = body.split("]", 1)[0]
        vals = _parse_text_numbers(inner, "vector")
        return vals if vals.size else np.zeros((0, 0))
    rows = [] if not body.strip() else [_parse_text_numbers(body, "matrix")]
    while True:
        line = stream.readline()
        if not line:
            raise EOFError("text matrix ended before ']'")
        text = line.decode("utf-8")
        done = "]" in text
        vals = _parse_text_numbers(text.split("]", 1)[0], "matrix")
        if vals.size:
            rows.append(vals)
        if done:
            break
    if any(r.size != rows[0].size for r in rows):
        raise ValueError("text matrix has rows of different lengths")
    return np.vstack(rows) if rows else np.zeros((0, 0))


_INT32_ELEMENT = np.dtype([("size", "u1"), ("value", "<i4")])


def _read_binary_int_vector(stream) -> np.ndarray:
    """Body of a binary int32-vector entry after `\\0B\\4` (kaldiio reads it element by
    element in Python, ~15x slower, and does not report truncation clearly)."""
    raw = stream.read(4)
    if len(raw) < 4:
        raise EOFError("integer vector: length cut off")
    n = struct.unpack("<i", raw)[0]
    if n < 0:
        raise ValueError(f"integer vector: negative length {n}")
    body = stream.read(5 * n)
    if len(body) < 5 * n:
        raise EOFError(f"integer vector of {n} elements cut off after {len(body) // 5}")
    elems = np.frombuffer(body, dtype=_INT32_ELEMENT)
    if n and not np.all(elems["size"] == 4):
        raise ValueError("integer vector: element without the int32 size byte 04")
    return elems["value"].astype(np.int32)


def _read_object(stream):
    """One Kaldi object (binary after `\\0B`, or text): a 2-D float matrix, a 1-D float vector
    or a 1-D int32 vector. Raises EOFError/ValueError on truncated or garbled data."""
    head = stream.read(1)
    if head == b"\n":  # text form of an empty integer vector: `key \n`
        return np.zeros(0, dtype=np.int32)
    if head != b"\0":
        return _read_text_object(stream, head)
    head += stream.read(2)
    if head[:2] != b"\0B":
        raise ValueError("binary object does not start with \\0B")
    if head[2:3] == b"\4":
        return _read_binary_int_vector(stream)
    counted = _CountingReader(MultiFileDescriptor(io.BytesIO(head), stream))
    value, expected = read_matrix_or_vector(counted, return_size=True)
    # kaldiio returns a short vector instead of failing (short matrices fail to reshape)
    if value.ndim == 1 and counted.count < expected:
        raise EOFError(f"vector needs {expected} bytes but only {counted.count} were left")
    return value


def _iter_archive_stream(stream, source: str, permissive: bool = False) -> Iterator[tuple[str, object]]:
    previous = None
    while True:
        try:
            key = read_token(stream)
        except _DECODE_ERRORS as e:
            where = f"after entry {previous!r}" if previous else "at its start"
            raise KaldiFormatError(f"{source}: archive is cut off or corrupt {where} "
                                   f"({type(e).__name__}: {e})") from None
        if key is None:
            return
        try:
            value = _read_object(stream)
        except _DECODE_ERRORS as e:
            msg = f"{source}: entry {key!r} is truncated or corrupt ({type(e).__name__}: {e})"
            if permissive:
                log.warning("%s; stopping this archive early (permissive read)", msg)
                return
            raise KaldiFormatError(msg) from None
        yield key, value
        previous = key


def iter_archive(name: str, permissive: bool = False) -> Iterator[tuple[str, object]]:
    """Entries of an archive file, `-` or pipe `cmd |`, as (key, ndarray) in file order."""
    with _open_input(name) as f:
        yield from _iter_archive_stream(f, name, permissive)


_RANGE_RE = re.compile(r"^(.*)\[([^\[\]]*)\]\s*$")


def split_rxfilename(rx: str) -> tuple[str, int | None, str | None]:
    """`file.ark:123[0:9,2:3]` -> ('file.ark', 123, '0:9,2:3'); pipes are left whole."""
    rx = rx.strip()
    if is_pipe(rx):
        return rx, None, None
    rng = None
    m = _RANGE_RE.match(rx)
    if m:
        rx, rng = m.group(1), m.group(2)
    path, sep, off = rx.rpartition(":")
    if sep and off.isdigit():
        return path, int(off), rng
    return rx, None, rng


def parse_range(rng: str, shape: tuple[int, ...], rx: str) -> tuple[slice, slice]:
    """Kaldi's `[r1:r2]` / `[r1:r2,c1:c2]`: inclusive bounds, empty or `:` means all."""
    parts = rng.split(",")
    if len(parts) > 2 or len(shape) != 2:
        raise KaldiFormatError(f"{rx}: range [{rng}] needs a matrix and at most rows,cols")
    out = []
    for part, size in zip(parts + [""] * (2 - len(parts)), shape):
        part = part.strip()
        if part in ("", ":"):
            out.append(slice(0, size))
            continue
        m = re.fullmatch(r"(\d+):(\d+)", part)
        if not m or not (int(m.group(1)) <= int(m.group(2)) < size):
            raise KaldiFormatError(f"{rx}: invalid range [{rng}] for a {shape[0]}x{shape[1]} matrix")
        out.append(slice(int(m.group(1)), int(m.group(2)) + 1))
    return out[0], out[1]


def load_rxfilename(rx: str):
    """Reads the object an scp line points at (`file:offset`, optional range, or `cmd |`)."""
    path, offset, rng = split_rxfilename(rx)
    with _open_input(path) as f:
        if offset is not None:
            f.seek(offset)
        try:
            value = _read_object(f)
        except _DECODE_ERRORS as e:
            raise KaldiFormatError(f"{rx}: truncated or corrupt object ({type(e).__name__}: {e})") from None
    if rng is not None:
        rows, cols = parse_range(rng, value.shape, rx)
        value = value[rows, cols]
    return value


# Bytes per element of full matrices; compressed ones are sized by `MatrixHeader.data_bytes`.
_FULL_MATRIX = {"FM": 4, "DM": 8}
_COMPRESSED_MATRIX = ("CM", "CM2", "CM3")


@dataclass(frozen=True)
class MatrixHeader:
    token: str          # FM, DM, CM, CM2, CM3
    rows: int
    cols: int
    header_bytes: int   # from the binary marker to the first data byte

    @property
    def data_bytes(self) -> int:
        """Bytes of matrix data after the header (`src/matrix/compressed-matrix.cc` DataSize)."""
        if self.token in _FULL_MATRIX:
            return self.rows * self.cols * _FULL_MATRIX[self.token]
        if self.token == "CM":   # per-column headers (four uint16) + one byte per element
            return self.cols * 8 + self.rows * self.cols
        return self.rows * self.cols * (2 if self.token == "CM2" else 1)


def read_matrix_header(f) -> MatrixHeader | None:
    """The header of the binary matrix at the stream position (docs/kaldi-formats.md 1.5, 1.6), or
    None for a text-mode object; KaldiFormatError if it is neither."""
    start = f.tell()
    marker = f.read(2)
    if marker != b"\0B":
        if marker[:1].isspace() or marker[:1] == b"[":
            return None
        raise KaldiFormatError(f"expected a Kaldi object (\\0B or text), got {marker!r}")
    token = read_token(f)
    if token in _FULL_MATRIX:
        raw = f.read(10)
        if len(raw) < 10 or raw[0] != 4 or raw[5] != 4:
            raise KaldiFormatError(f"{token} matrix header is truncated or corrupt")
        rows, cols = struct.unpack("<i", raw[1:5])[0], struct.unpack("<i", raw[6:10])[0]
    elif token in _COMPRESSED_MATRIX:
        raw = f.read(16)
        if len(raw) < 16:
            raise KaldiFormatError(f"{token} matrix header is truncated")
        rows, cols = struct.unpack("<ii", raw[8:16])
    else:
        raise KaldiFormatError(f"expected a matrix (FM, DM, CM, CM2 or CM3), got {token!r}")
    if rows < 0 or cols < 0:
        raise KaldiFormatError(f"{token} matrix header says {rows}x{cols}")
    return MatrixHeader(token, rows, cols, f.tell() - start)


class ArchiveFiles:
    """Matrix shapes of scp entries from their headers alone, each archive opened once (an scp
    points into few files many times). Use as a context manager."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[object, int]] = {}

    def __enter__(self) -> ArchiveFiles:
        return self

    def __exit__(self, *exc) -> None:
        for f, _ in self._files.values():
            f.close()

    def _open(self, path: str):
        if path not in self._files:
            try:
                f = open(path, "rb")
            except OSError as e:
                raise KaldiFormatError(f"cannot open {path}: {e.strerror}") from None
            self._files[path] = (f, os.fstat(f.fileno()).st_size)
        return self._files[path]

    def header_shape(self, rx: str) -> tuple[int, int] | None:
        """(rows, cols) of the binary matrix `rx` points at, after its range, checking that its
        data lies within the file; None for a pipe, `-` or a text-mode object (read those whole)."""
        path, offset, rng = split_rxfilename(rx)
        if is_pipe(path) or path == "-":
            return None
        f, size = self._open(path)
        offset = offset or 0
        if offset >= size:
            raise KaldiFormatError(f"offset {offset} is beyond the end of {path} ({size} bytes)")
        f.seek(offset)
        header = read_matrix_header(f)
        if header is None:
            return None
        end = offset + header.header_bytes + header.data_bytes
        if end > size:
            raise KaldiFormatError(f"{header.rows}x{header.cols} {header.token} matrix at {path}:{offset} needs "
                                   f"{end} bytes, the file has {size} (truncated archive?)")
        if rng is None:
            return header.rows, header.cols
        rows, cols = parse_range(rng, (header.rows, header.cols), rx)
        return rows.stop - rows.start, cols.stop - cols.start


def matrix_shape(rx: str) -> tuple[int, int]:
    """(rows, cols) of the matrix an scp entry points at, reading only its header when it can."""
    with ArchiveFiles() as files:
        shape = files.header_shape(rx)
    if shape is not None:
        return shape
    value = load_rxfilename(rx)
    if value.ndim != 2:
        raise KaldiFormatError(f"{rx}: expected a matrix, got an array of shape {value.shape}")
    return value.shape


def read_script(path: str) -> list[tuple[str, str]]:
    """(key, rxfilename) pairs of an scp file; malformed or duplicate lines name the line."""
    entries, seen = [], {}
    with _open_input(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode("utf-8").strip()
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise KaldiFormatError(f"{path}:{lineno}: expected '<key> <rxfilename>', got {line!r}")
            if parts[0] in seen:
                raise KaldiFormatError(f"{path}:{lineno}: duplicate key {parts[0]!r} "
                                       f"(first on line {seen[parts[0]]})")
            seen[parts[0]] = lineno
            entries.append((parts[0], parts[1]))
    return entries


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _as_matrix(key: str, value, dtype, source: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind != "f":
        raise KaldiFormatError(f"{source}: entry {key!r}: expected a float matrix, got a {_describe(value)}")
    return np.array(value, dtype=dtype)  # copies: kaldiio's arrays are read-only views


def _as_int_vector(key: str, value, source: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.int32:
        raise KaldiFormatError(f"{source}: entry {key!r}: expected an int32 vector, got a {_describe(value)}")
    return value


def _iter_table(rspecifier: str) -> Iterator[tuple[str, object, str]]:
    """(key, raw value, source) of an ark or scp rspecifier, in table order."""
    spec = parse_specifier(rspecifier)
    if spec.ark is not None:
        for key, value in iter_archive(spec.ark, spec.permissive):
            yield key, value, spec.ark
        return
    skipped = 0
    for key, rx in read_script(spec.scp):
        try:
            value = load_rxfilename(rx)
        except KaldiFormatError as e:
            if not spec.permissive:
                raise KaldiFormatError(f"{spec.scp}: entry {key!r}: {e}") from None
            skipped += 1
            log.warning("%s: skipping entry %r (permissive read): %s", spec.scp, key, e)
            continue
        yield key, value, f"{spec.scp} ({rx})"
    if skipped:
        log.warning("%s: skipped %d unreadable entries", spec.scp, skipped)


def read_matrix_table(rspecifier: str, dtype=np.float32) -> Iterator[tuple[str, np.ndarray]]:
    """(key, matrix) for every entry of `ark:...`/`scp:...`, converted to `dtype`."""
    for key, value, source in _iter_table(rspecifier):
        yield key, _as_matrix(key, value, dtype, source)


def read_int_vector_stream(stream, source: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, int32 vector) entries of an archive already open as a binary stream
    (e.g. `gzip.open(ali.1.gz)`); `source` names it in errors."""
    for key, value in _iter_archive_stream(stream, source):
        yield key, _as_int_vector(key, value, source)


def read_int_vector_table(rspecifier: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, int32 vector) for every entry (alignments, pdf sequences)."""
    for key, value, source in _iter_table(rspecifier):
        yield key, _as_int_vector(key, value, source)


class MatrixTable(Mapping):
    """Random access to a matrix table (Kaldi's RandomAccessBaseFloatMatrixReader).

    `scp:` (or a bare scp path) loads each matrix when it is asked for; `ark:` reads the whole
    archive into memory on first use (an archive cannot be indexed without decoding it).
    """

    def __init__(self, rspecifier_or_scp_path: str, dtype=np.float32):
        spec = rspecifier_or_scp_path
        if not re.match(r"^[a-z,]*(ark|scp)[a-z,]*:", spec):
            spec = "scp:" + spec
        self.rspecifier = spec
        self.dtype = dtype
        self._spec = parse_specifier(spec)
        self._scp: dict[str, str] | None = None
        self._ark: dict[str, np.ndarray] | None = None

    def _index(self) -> dict:
        if self._spec.scp is not None:
            if self._scp is None:
                self._scp = dict(read_script(self._spec.scp))
            return self._scp
        if self._ark is None:
            table = {}
            for key, value in read_matrix_table(self.rspecifier, self.dtype):
                if key in table:
                    raise KaldiFormatError(f"{self._spec.ark}: duplicate key {key!r}")
                table[key] = value
            self._ark = table
        return self._ark

    def __getitem__(self, key: str) -> np.ndarray:
        index = self._index()
        if self._ark is not None:
            return index[key]
        rx = index[key]
        try:
            return _as_matrix(key, load_rxfilename(rx), self.dtype, f"{self._spec.scp} ({rx})")
        except KaldiFormatError as e:
            raise KaldiFormatError(f"{self._spec.scp}: entry {key!r}: {e}") from None

    def shape(self, key: str) -> tuple[int, int]:
        """(rows, cols) of one entry; for scp tables only the header is read."""
        index = self._index()
        if self._ark is not None:
            return index[key].shape
        try:
            return matrix_shape(index[key])
        except KaldiFormatError as e:
            raise KaldiFormatError(f"{self._spec.scp}: entry {key!r}: {e}") from None

    def rxfilename(self, key: str) -> str:
        """The scp entry (`file.ark:offset[range]`) of `key`; scp tables only."""
        if self._spec.scp is None:
            raise TypeError(f"{self.rspecifier} is an archive; it has no scp entries")
        return self._index()[key]

    def __contains__(self, key) -> bool:
        return key in self._index()

    def __iter__(self):
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())


# -- writing ------------------------------------------------------------------------------

def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        raise ValueError(f"invalid table key {key!r} (must be non-empty, without whitespace)")


class _TableOutput:
    """An open wspecifier. Plain files go to temporaries renamed into place on success."""

    def __init__(self, wspecifier: str):
        self.spec = parse_specifier(wspecifier, for_writing=True)
        ark = self.spec.ark
        if self.spec.scp is not None and (is_pipe(ark) or ark == "-"):
            raise ValueError(f"{wspecifier!r}: an scp needs the archive to be a plain file")
        self._renames: list[tuple[str, str]] = []
        self.ark = self._open(ark, "wb")
        try:
            self.scp = self._open(self.spec.scp, "w") if self.spec.scp is not None else None
        except BaseException:
            self.ark.close()
            self._discard()
            raise

    def _open(self, name: str, mode: str):
        if is_pipe(name) or name == "-":
            return open_like_kaldi(name, mode)
        fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=os.path.dirname(os.path.abspath(name)))
        self._renames.append((tmp, name))
        return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")

    def write(self, key: str, write_value) -> None:
        _check_key(key)
        self.ark.write(key.encode("utf-8") + b" ")
        if self.scp is not None:
            self.scp.write(f"{key} {self.spec.ark}:{self.ark.tell()}\n")
        write_value(self.ark)
        if "f" in self.spec.options:
            self.ark.flush()

    def close(self, ok: bool) -> None:
        status = self.ark.close()
        if self.scp is not None:
            self.scp.close()
        if ok and status:
            raise KaldiFormatError(f"command {self.spec.ark!r} exited with status {status >> 8}")
        if not ok:
            self._discard()
            return
        for tmp, final in self._renames:
            os.chmod(tmp, FILE_MODE)  # mkstemp made it 0600; finished files get the umask's mode
            os.replace(tmp, final)

    def _discard(self) -> None:
        for tmp, _ in self._renames:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _write_table(wspecifier: str, items, write_one) -> int:
    if isinstance(items, Mapping):
        items = items.items()
    out = _TableOutput(wspecifier)
    ok = False
    n = 0
    try:
        for key, value in items:
            out.write(key, lambda f, v=value, k=key: write_one(f, k, v, out.spec.text))
            n += 1
        ok = True
    finally:
        out.close(ok)
    return n


_COMPRESSION_METHODS = range(1, 8)  # Kaldi's CompressionMethod enum (copy-feats --compression-method)


def write_matrix_table(wspecifier: str, items: Iterable[tuple[str, np.ndarray]] | Mapping,
                       compress: bool | int | None = None) -> int:
    """Writes float matrices (float64 stays DM, everything else FM) and returns the count.

    `compress`: None/False = plain, True = Kaldi's automatic method (CM for > 8 rows, else
    CM2, like `copy-feats --compress=true`), or a Kaldi CompressionMethod number 1..7.
    """
    method = 1 if compress is True else (compress or None)
    if method is not None and method not in _COMPRESSION_METHODS:
        raise ValueError(f"unknown compression method {compress!r} (use True or 1..7)")
    if method is not None and "t" in parse_specifier(wspecifier, True).options:
        raise ValueError(f"{wspecifier!r}: compressed matrices need a binary archive")

    def write_one(f, key, value, text):
        m = np.asarray(value)
        if m.ndim != 2:
            raise ValueError(f"entry {key!r}: expected a matrix, got shape {m.shape}")
        if m.dtype != np.float64 or method is not None:
            m = m.astype(np.float32, copy=False)
        if m.size == 0:
            # Kaldi's empty matrix is 0x0 (it rejects 0xN); kaldiio cannot compress it, and
            # FM is valid wherever CM is.
            m = m.reshape(0, 0)
        if text:
            f.write(_text_matrix(m))
        else:
            write_array(f, np.ascontiguousarray(m), compression_method=method if m.size else None)

    return _write_table(wspecifier, items, write_one)


def _text_matrix(m: np.ndarray) -> bytes:
    if m.size == 0:
        return b" [ ]\n"
    fmt = "%.17g" if m.dtype == np.float64 else "%.9g"  # round-trips exactly; Kaldi reads any
    rows = "".join("\n  " + "".join(fmt % x + " " for x in row) for row in m)
    return (" [" + rows + "]\n").encode("ascii")


def write_int_vector_table(wspecifier: str, items: Iterable[tuple[str, np.ndarray]] | Mapping) -> int:
    """Writes int32 vectors in Kaldi's layout (binary: each element `04`+int32; text `k 1 2 \\n`)."""

    def write_one(f, key, value, text):
        v = np.asarray(value)
        if v.ndim != 1 or (v.size and v.dtype.kind not in "iu"):
            raise ValueError(f"entry {key!r}: expected a 1-D integer vector, got {v.dtype} {v.shape}")
        if v.size and (v.min() < -2**31 or v.max() >= 2**31):
            raise ValueError(f"entry {key!r}: values do not fit in int32")
        v = v.astype(np.int32)
        if text:
            f.write(("".join(f"{x} " for x in v.tolist()) + "\n").encode("ascii"))
        else:
            write_array(f, v)

    return _write_table(wspecifier, items, write_one)
