"""Kaldi's object serialization primitives, binary and text (docs/kaldi-formats.md section 1).

One `KaldiReader` / `KaldiWriter` pair handles both modes so that every object format
(transition model, nnet3 components, ...) is written once and works in either mode.
Errors name the file and the byte offset (binary) or the token (text) where parsing failed.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from ..errors import UsageError

BINARY_HEADER = b"\0B"


class KaldiFormatError(UsageError):
    """A Kaldi file did not parse; the message names the file and the position (the user's data:
    entry points print it as one line)."""


def _fmt(x: float, digits: int) -> str:
    return "%.*g" % (digits, x)


class KaldiReader:
    """Reads Kaldi objects from a byte buffer in binary or text mode."""

    def __init__(self, data: bytes, binary: bool, pos: int = 0, source: str = "<bytes>"):
        self.data = data
        self.binary = binary
        self.pos = pos
        self.source = source

    @classmethod
    def open(cls, path: str) -> KaldiReader:
        """Opens a whole-file Kaldi object, detecting binary mode from the `\\0B` header."""
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_bytes(data, source=path)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> KaldiReader:
        if data[:2] == BINARY_HEADER:
            return cls(data, True, 2, source)
        return cls(data, False, 0, source)

    # -- errors and low-level helpers -------------------------------------------------
    def error(self, msg: str) -> KaldiFormatError:
        return KaldiFormatError(f"{self.source}: byte {self.pos}: {msg}")

    def eof(self) -> bool:
        if not self.binary:
            self._skip_ws()
        return self.pos >= len(self.data)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"unexpected end of file (wanted {n} more bytes)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def _skip_ws(self) -> None:
        d, p = self.data, self.pos
        while p < len(d) and d[p] in b" \t\n\r":
            p += 1
        self.pos = p

    def _word(self) -> str:
        """Text mode: the next whitespace-delimited word."""
        self._skip_ws()
        d, start = self.data, self.pos
        p = start
        while p < len(d) and d[p] not in b" \t\n\r":
            p += 1
        if p == start:
            raise self.error("unexpected end of file (wanted a token)")
        self.pos = p
        return d[start:p].decode("latin-1")

    # -- tokens -------------------------------------------------------------------
    def read_token(self) -> str:
        if not self.binary:
            tok = self._word()
            if self.pos < len(self.data):
                self.pos += 1  # the single whitespace after a token
            return tok
        d, start = self.data, self.pos
        end = d.find(b" ", start)
        if end < 0:
            raise self.error("unexpected end of file (wanted a token)")
        self.pos = end + 1
        return d[start:end].decode("latin-1")

    def peek_token(self) -> str:
        save = self.pos
        try:
            return self.read_token()
        finally:
            self.pos = save

    def expect_token(self, token: str) -> None:
        save = self.pos
        got = self.read_token()
        if got != token and not (token.startswith("<") and got == token[1:]):
            self.pos = save
            raise self.error(f"expected token {token!r}, got {got!r}")

    # -- basic types ----------------------------------------------------------------
    def read_int32(self) -> int:
        if not self.binary:
            w = self._word()
            try:
                return int(w)
            except ValueError:
                raise self.error(f"expected an integer, got {w!r}") from None
        size = self._take(1)
        if size != b"\x04":
            raise self.error(f"expected an int32 (size byte 04), got size byte {size.hex()}")
        return struct.unpack("<i", self._take(4))[0]

    def read_uint32(self) -> int:
        if not self.binary:
            return int(self._word())
        size = self._take(1)
        if size != b"\xfc":
            raise self.error(f"expected a uint32 (size byte fc), got size byte {size.hex()}")
        return struct.unpack("<I", self._take(4))[0]

    def read_float(self) -> float:
        if not self.binary:
            w = self._word()
            try:
                return float(w)
            except ValueError:
                raise self.error(f"expected a number, got {w!r}") from None
        size = self._take(1)
        if size == b"\x04":
            return struct.unpack("<f", self._take(4))[0]
        if size == b"\x08":
            return struct.unpack("<d", self._take(8))[0]
        raise self.error(f"expected a float (size byte 04 or 08), got {size.hex()}")

    read_double = read_float

    def read_bool(self) -> bool:
        if not self.binary:
            w = self._word()
        else:
            w = self._take(1).decode("latin-1")
        if w not in ("T", "F"):
            raise self.error(f"expected a bool (T or F), got {w!r}")
        return w == "T"

    def read_int_vector(self) -> list[int]:
        """`WriteIntegerVector` layout (topology phone lists): binary `\\x04`, int32 n, n int32s;
        text `[ a b ... ]`."""
        return self._read_int_entries("integer vector", 1, int)

    def read_int_pair_vector(self) -> list[tuple[int, int]]:
        """`WriteIntegerPairVector` layout (TimeHeightConvolution's offsets): binary `\\x04`,
        int32 n, n pairs of int32s; text `[ a,b c,d ... ]`."""
        def pair(word: str) -> tuple[int, int]:
            first, comma, second = word.partition(",")
            if not comma:
                raise ValueError(word)
            return int(first), int(second)
        return self._read_int_entries("integer-pair vector", 2, pair)

    def _read_int_entries(self, what: str, width: int, parse_word):
        """The two integer-vector layouts: entries of `width` int32s, `parse_word` for text."""
        if not self.binary:
            if self._word() != "[":
                raise self.error(f"expected '[' starting an {what}")
            out = []
            while (w := self._word()) != "]":
                try:
                    out.append(parse_word(w))
                except ValueError:
                    raise self.error(f"{what}: bad entry {w!r}") from None
            return out
        size = self._take(1)
        if size != b"\x04":
            raise self.error(f"{what}: expected element size 4, got {size.hex()}")
        n = struct.unpack("<i", self._take(4))[0]
        if n < 0:
            raise self.error(f"{what}: negative length {n}")
        values = np.frombuffer(self._take(4 * width * n), "<i4").reshape(n, width).tolist()
        return [v[0] for v in values] if width == 1 else [tuple(v) for v in values]

    # -- vectors and matrices ---------------------------------------------------------
    def read_vector(self) -> np.ndarray:
        if not self.binary:
            return self._read_text_vector()
        tok = self.read_token()
        if tok not in ("FV", "DV"):
            raise self.error(f"expected a vector (FV or DV), got {tok!r}")
        n = self.read_int32()
        dt = "<f4" if tok == "FV" else "<f8"
        width = 4 if tok == "FV" else 8
        return np.frombuffer(self._take(width * n), dt).astype(np.float32)

    def read_double_vector(self) -> np.ndarray:
        if not self.binary:
            return self._read_text_vector().astype(np.float64)
        tok = self.read_token()
        if tok not in ("FV", "DV"):
            raise self.error(f"expected a vector (FV or DV), got {tok!r}")
        n = self.read_int32()
        dt = "<f4" if tok == "FV" else "<f8"
        return np.frombuffer(self._take((4 if tok == "FV" else 8) * n), dt).astype(np.float64)

    def _read_text_vector(self) -> np.ndarray:
        if self._word() != "[":
            raise self.error("expected '[' starting a vector")
        vals = []
        while True:
            w = self._word()
            if w == "]":
                return np.asarray(vals, dtype=np.float32)
            vals.append(float(w))

    def read_matrix(self, double: bool = False) -> np.ndarray:
        """A float matrix (float64 with `double`, e.g. a CuMatrix<double>), FM or DM on disk."""
        dtype = np.float64 if double else np.float32
        if not self.binary:
            if self._word() != "[":
                raise self.error("expected '[' starting a matrix")
            rows, row = [], []
            while True:
                # rows end at newlines; read line-wise to keep the shape
                self._skip_spaces_only()
                if self.pos >= len(self.data):
                    raise self.error("unexpected end of file inside a matrix")
                c = self.data[self.pos:self.pos + 1]
                if c in (b"\n", b"\r"):
                    self.pos += 1
                    if row:
                        rows.append(row)
                        row = []
                    continue
                w = self._word()
                if w == "]":
                    if row:
                        rows.append(row)
                    break
                row.append(float(w))
            if rows and any(len(r) != len(rows[0]) for r in rows):
                raise self.error("text matrix has rows of different lengths")
            return np.asarray(rows, dtype=dtype).reshape(len(rows), len(rows[0]) if rows else 0)
        tok = self.read_token()
        if tok not in ("FM", "DM"):
            raise self.error(f"expected a matrix (FM or DM), got {tok!r}")
        r = self.read_int32()
        c = self.read_int32()
        dt, width = ("<f4", 4) if tok == "FM" else ("<f8", 8)
        return np.frombuffer(self._take(width * r * c), dt).reshape(r, c).astype(dtype)

    def _skip_spaces_only(self) -> None:
        d, p = self.data, self.pos
        while p < len(d) and d[p] in b" \t":
            p += 1
        self.pos = p

    def read_line(self) -> str:
        """Raw text up to (and consuming) the next newline; used by the nnet3 config section."""
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self.error("unexpected end of file (wanted a newline)")
        line = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return line


class KaldiWriter:
    """Writes Kaldi objects in binary or text mode into an in-memory buffer."""

    def __init__(self, binary: bool, text_digits: int = 7):
        self.binary = binary
        # Kaldi prints 7 significant digits; 9 round-trips float32 exactly (pitfall 5).
        self.digits = text_digits
        self.buf = io.BytesIO()

    def getvalue(self) -> bytes:
        return self.buf.getvalue()

    def raw(self, b: bytes | str) -> None:
        self.buf.write(b.encode("utf-8") if isinstance(b, str) else b)

    def header(self) -> None:
        if self.binary:
            self.raw(BINARY_HEADER)

    def newline(self) -> None:
        """A newline that only text mode writes."""
        if not self.binary:
            self.raw(b"\n")

    def token(self, tok: str) -> None:
        if not tok or any(c.isspace() for c in tok):
            raise ValueError(f"invalid Kaldi token {tok!r}")
        self.raw(tok.encode("latin-1") + b" ")

    def int32(self, v: int) -> None:
        if self.binary:
            self.raw(b"\x04" + struct.pack("<i", int(v)))
        else:
            self.raw(f"{int(v)} ")

    def float32(self, v: float) -> None:
        if self.binary:
            self.raw(b"\x04" + struct.pack("<f", float(v)))
        else:
            self.raw(_fmt(float(np.float32(v)), self.digits) + " ")

    def float64(self, v: float) -> None:
        if self.binary:
            self.raw(b"\x08" + struct.pack("<d", float(v)))
        else:
            self.raw(_fmt(float(v), self.digits) + " ")

    def bool(self, v: bool) -> None:
        self.raw(b"T" if v else b"F")
        if not self.binary:
            self.raw(b" ")

    def int_vector(self, v) -> None:
        self._int_entries(v, [str(int(x)) for x in v])

    def int_pair_vector(self, pairs) -> None:
        self._int_entries(pairs, [f"{int(a)},{int(b)}" for a, b in pairs])

    def _int_entries(self, entries, words: list[str]) -> None:
        """`WriteIntegerVector`/`WriteIntegerPairVector`: `\\x04`, int32 count, the int32s; text
        `[ w w ... ]` and a newline."""
        if self.binary:
            self.raw(b"\x04" + struct.pack("<i", len(entries)) + np.asarray(entries, "<i4").tobytes())
        else:
            self.raw("[ " + "".join(w + " " for w in words) + "]\n")

    def vector(self, v, double: bool = False) -> None:
        v = np.asarray(v)
        if self.binary:
            self.token("DV" if double else "FV")
            self.int32(v.size)
            self.raw(np.ascontiguousarray(v, "<f8" if double else "<f4").tobytes())
        else:
            vals = v.astype(np.float64 if double else np.float32).ravel()
            self.raw(" [ " + "".join(_fmt(float(x), self.digits) + " " for x in vals) + "]\n")

    def matrix(self, m, double: bool = False) -> None:
        m = np.asarray(m)
        if m.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
        if self.binary:
            self.token("DM" if double else "FM")
            self.int32(m.shape[0])
            self.int32(m.shape[1])
            self.raw(np.ascontiguousarray(m, "<f8" if double else "<f4").tobytes())
            return
        if m.shape[1] == 0 or m.shape[0] == 0:
            self.raw(" [ ]\n")
            return
        vals = m.astype(np.float64 if double else np.float32)
        rows = ["\n  " + "".join(_fmt(float(x), self.digits) + " " for x in r) for r in vals]
        self.raw(" [" + "".join(rows) + "]\n")


def matrix_file(m, binary: bool = True) -> bytes:
    """A whole Kaldi matrix file (lda.mat, final.mat): header and matrix, as WriteKaldiObject."""
    w = KaldiWriter(binary)
    w.header()
    w.matrix(m)
    return w.getvalue()


def vector_file(v, binary: bool = True) -> bytes:
    """A whole Kaldi vector file (post.*.vec), as WriteKaldiObject."""
    w = KaldiWriter(binary)
    w.header()
    w.vector(v)
    return w.getvalue()


def script_text_vector(words) -> str:
    """A vector as Kaldi's Python scripts write it (`write_kaldi_matrix` of one row in
    steps/libs/common.py): `[ a b c ]` and a newline; `words` already formatted."""
    return "[ " + " ".join(words) + " ]\n"
