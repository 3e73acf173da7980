"""Kaldi data directories: read lazily, validate, write maps, split per speaker.

docs/kaldi-formats.md 8.1-8.2 (`utils/validate_data_dir.sh`, `utils/split_data.sh`,
`utils/split_scp.pl`). Keys sort in C-locale (byte) order, which for UTF-8 text is Python's
code-point order of `str`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..atomic import write_bytes
from ..errors import UsageError
from .binary import KaldiFormatError
from .tables import ArchiveFiles, MatrixTable, load_rxfilename, read_script

log = logging.getLogger(__name__)


class DataDirError(UsageError):
    """A data directory file is malformed or inconsistent; the message names file and line."""


@dataclass(frozen=True)
class MapLine:
    lineno: int
    key: str
    value: str


def read_kaldi_map_lines(path: str, allow_empty_value: bool = False) -> list[MapLine]:
    """`<key> <value...>` lines of a Kaldi text map, with their line numbers.

    Blank lines, lines without a value (unless allowed, as in `text`) and a missing final
    newline are errors naming the file and line.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        raise DataDirError(f"{path}:{len(data.splitlines())}: last line has no newline")
    out = []
    for lineno, raw in enumerate(data.decode("utf-8").split("\n")[:-1], 1):
        parts = raw.strip().split(None, 1)
        if not parts:
            raise DataDirError(f"{path}:{lineno}: empty line")
        if len(parts) == 1 and not allow_empty_value:
            raise DataDirError(f"{path}:{lineno}: key {parts[0]!r} has no value")
        out.append(MapLine(lineno, parts[0], parts[1] if len(parts) == 2 else ""))
    return out


def read_kaldi_map(path: str, allow_empty_value: bool = False) -> dict[str, str]:
    """`{key: rest of line}` of a Kaldi text map; duplicate keys are errors."""
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for line in read_kaldi_map_lines(path, allow_empty_value):
        if line.key in out:
            raise DataDirError(f"{path}:{line.lineno}: duplicate key {line.key!r} "
                               f"(first on line {first[line.key]})")
        out[line.key] = line.value
        first[line.key] = line.lineno
    return out


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def write_kaldi_map(path: str, mapping: Mapping) -> None:
    """Writes `key value` lines sorted by key (C order), atomically; list values are joined."""
    lines = []
    for key in sorted(mapping):
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}: invalid key {key!r}")
        value = _format_value(mapping[key])
        lines.append(f"{key} {value}\n" if value else f"{key}\n")
    write_bytes(path, "".join(lines).encode("utf-8"))


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Speaker -> its utterances, speakers and utterances in C order (utt2spk_to_spk2utt.pl)."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return dict(sorted(spk2utt.items()))


_UNWRITABLE_SAID: set[str] = set()  # data dirs whose utt2num_frames could not be written


def feat_to_len(scp_path: str) -> dict[str, int]:
    """`feat-to-len scp:<scp_path> ark,t:-`: the rows of every entry, in scp order.

    Binary matrices (docs/kaldi-formats.md 1.5, 1.6) give their rows from the header alone,
    each archive opened once; a `[r1:r2]` range counts its rows. Pipes, `-` and text-mode
    objects are read whole, as Kaldi would.
    """
    out = {}
    with ArchiveFiles() as files:
        for key, rx in read_script(scp_path):
            try:
                shape = files.header_shape(rx) or load_rxfilename(rx).shape
            except (OSError, KaldiFormatError) as e:
                raise DataDirError(f"{scp_path}: entry {key!r} ({rx}): {e}") from None
            out[key] = int(shape[0])
    return out


# Files indexed by utterance / by speaker that split_data.sh carries into each part.
UTT_FILES = ("feats.scp", "text", "utt2dur", "utt2num_frames", "vad.scp", "utt2lang",
             "utt2uniq", "utt2warp")
SPK_FILES = ("cmvn.scp", "spk2gender", "spk2warp")


class DataDir:
    """A Kaldi data directory. Every file is read on first use; absent files give None."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise DataDirError(f"{path}: no such data directory")
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.isfile(self.file(name))

    def _map(self, name: str, allow_empty_value: bool = False) -> dict[str, str] | None:
        return read_kaldi_map(self.file(name), allow_empty_value) if self.has(name) else None

    @cached_property
    def utt2spk(self) -> dict[str, str]:
        if not self.has("utt2spk"):
            raise DataDirError(f"{self.file('utt2spk')}: missing (every data directory needs it)")
        out = {}
        for line in read_kaldi_map_lines(self.file("utt2spk")):
            if len(line.value.split()) != 1:
                raise DataDirError(f"{self.file('utt2spk')}:{line.lineno}: expected "
                                   f"'<utt> <spk>', got {line.key} {line.value!r}")
            if line.key in out:
                raise DataDirError(f"{self.file('utt2spk')}:{line.lineno}: duplicate utterance {line.key!r}")
            out[line.key] = line.value
        return out

    @cached_property
    def spk2utt(self) -> dict[str, list[str]]:
        """From `spk2utt` if present, else derived from `utt2spk`."""
        m = self._map("spk2utt")
        if m is None:
            return utt2spk_to_spk2utt(self.utt2spk)
        return {spk: utts.split() for spk, utts in m.items()}

    @property
    def utts(self) -> list[str]:
        return list(self.utt2spk)

    @cached_property
    def text(self) -> dict[str, str] | None:
        return self._map("text", allow_empty_value=True)

    @cached_property
    def wav_scp(self) -> dict[str, str] | None:
        return self._map("wav.scp")

    @cached_property
    def utt2uniq(self) -> dict[str, str] | None:
        """Utterance -> its source utterance (speed-perturbed copies share one)."""
        return self._map("utt2uniq")

    @cached_property
    def utt2num_frames(self) -> dict[str, int] | None:
        return self._numbers("utt2num_frames", int)

    @cached_property
    def utt2dur(self) -> dict[str, float] | None:
        return self._numbers("utt2dur", float)

    def _numbers(self, name: str, kind) -> dict | None:
        if not self.has(name):
            return None
        out = {}
        for line in read_kaldi_map_lines(self.file(name)):
            try:
                out[line.key] = kind(line.value)
            except ValueError:
                raise DataDirError(f"{self.file(name)}:{line.lineno}: {line.value!r} is not "
                                   f"a{'n integer' if kind is int else ' number'}") from None
        return out

    @cached_property
    def feats(self) -> MatrixTable | None:
        """Features by utterance (lazy random access over feats.scp)."""
        return MatrixTable(self.file("feats.scp")) if self.has("feats.scp") else None

    @cached_property
    def cmvn(self) -> MatrixTable | None:
        """CMVN stats (double) by speaker, or by utterance, from cmvn.scp."""
        return MatrixTable(self.file("cmvn.scp"), dtype=np.float64) if self.has("cmvn.scp") else None

    @cached_property
    def lengths(self) -> dict[str, int]:
        """Frames of every utterance: `utt2num_frames` when present, else computed once from
        the feature headers (`feat_to_len`) and written to `utt2num_frames` atomically, as
        `utils/data/get_utt2num_frames.sh` does; in a read-only directory the lengths stay in
        memory (said once per directory)."""
        if self.utt2num_frames is not None:
            return self.utt2num_frames
        if self.feats is None:
            raise DataDirError(f"{self.path}: neither utt2num_frames nor feats.scp to count frames")
        lengths = feat_to_len(self.file("feats.scp"))
        try:
            write_kaldi_map(self.file("utt2num_frames"), lengths)
        except OSError as e:
            if self.path not in _UNWRITABLE_SAID:
                _UNWRITABLE_SAID.add(self.path)
                log.warning("%s: cannot write utt2num_frames (%s); the frame counts of its %d "
                            "utterances are kept in memory", self.path, e.strerror, len(lengths))
        return lengths

    def num_frames(self, utt: str) -> int:
        """Frames of `utt` (see `lengths`)."""
        if utt not in self.lengths:
            name = "utt2num_frames" if self.utt2num_frames is not None else "feats.scp"
            raise KeyError(f"{self.file(name)}: no utterance {utt!r}")
        return self.lengths[utt]

    # -- validation -----------------------------------------------------------------------
    def validate(self, no_feats: bool = False, no_text: bool = False, no_wav: bool = False,
                 no_spk_sort: bool = False) -> None:
        """The checks of `utils/validate_data_dir.sh` (same `--no-*` switches); raises
        DataDirError naming the file and line of the first problem."""
        for name in ("utt2spk", "spk2utt"):
            if not self.has(name):
                raise DataDirError(f"{self.file(name)}: missing")
            if os.path.getsize(self.file(name)) == 0:
                raise DataDirError(f"{self.file(name)}: empty")
        utt_lines = self._sorted_lines("utt2spk")
        utt2spk = self.utt2spk
        utts = [line.key for line in utt_lines]
        if not no_spk_sort:
            spks = [utt2spk[u] for u in utts]
            for i in range(1, len(spks)):
                if spks[i] < spks[i - 1]:
                    raise DataDirError(
                        f"{self.file('utt2spk')}:{utt_lines[i].lineno}: not sorted by speaker "
                        f"({spks[i]!r} after {spks[i - 1]!r}); make speaker-ids prefixes of utt-ids")
        self._check_spk2utt(utt2spk)
        speakers = [line.key for line in self._sorted_lines("spk2utt")]

        if self.has("text"):
            text_lines = self._sorted_lines("text", allow_empty_value=True)
            for line in text_lines:
                bad = {"<s>", "</s>", "#0"} & set(line.value.split())
                if bad:
                    raise DataDirError(f"{self.file('text')}:{line.lineno}: illegal symbol "
                                       f"{sorted(bad)[0]!r} in the transcript of {line.key!r}")
            self._same_keys("text", text_lines, utts, "utt2spk")
        elif not no_text:
            raise DataDirError(f"{self.file('text')}: missing (pass no_text=True if by design)")

        self._check_wav(utts, no_wav)
        if self.has("feats.scp"):
            self._same_keys("feats.scp", self._sorted_lines("feats.scp"), utts, "utt2spk")
        elif not no_feats:
            raise DataDirError(f"{self.file('feats.scp')}: missing (pass no_feats=True if by design)")
        if self.has("cmvn.scp"):
            self._same_keys("cmvn.scp", self._sorted_lines("cmvn.scp"), speakers, "spk2utt")
        for name in ("vad.scp", "utt2lang", "utt2uniq"):
            if self.has(name):
                self._same_keys(name, self._sorted_lines(name), utts, "utt2spk")
        for name, kind in (("utt2dur", float), ("utt2num_frames", int)):
            if self.has(name):
                lines = self._sorted_lines(name)
                self._same_keys(name, lines, utts, "utt2spk")
                for line in lines:
                    if not _positive(line.value, kind):
                        raise DataDirError(f"{self.file(name)}:{line.lineno}: bad value "
                                           f"{line.value!r} (want a positive {kind.__name__})")

    def _sorted_lines(self, name: str, allow_empty_value: bool = False) -> list[MapLine]:
        lines = read_kaldi_map_lines(self.file(name), allow_empty_value)
        for prev, line in zip(lines, lines[1:]):
            if line.key == prev.key:
                raise DataDirError(f"{self.file(name)}:{line.lineno}: duplicate key {line.key!r}")
            if line.key < prev.key:
                raise DataDirError(f"{self.file(name)}:{line.lineno}: not sorted (C order): "
                                   f"{line.key!r} after {prev.key!r}")
        return lines

    def _same_keys(self, name: str, lines: list[MapLine], expected: list[str], ref: str) -> None:
        """Both lists are sorted; report the first key that one has and the other lacks."""
        keys = [line.key for line in lines]
        if keys == expected:
            return
        expected_set, keys_set = set(expected), set(keys)
        for line in lines:
            if line.key not in expected_set:
                raise DataDirError(f"{self.file(name)}:{line.lineno}: key {line.key!r} is not in {ref}")
        missing = [k for k in expected if k not in keys_set]
        raise DataDirError(f"{self.file(name)}: lacks {len(missing)} key(s) of {ref}, "
                           f"e.g. {missing[:3]}")

    def _check_spk2utt(self, utt2spk: dict[str, str]) -> None:
        path = self.file("spk2utt")
        seen = {}
        for line in self._sorted_lines("spk2utt"):
            for utt in line.value.split():
                if utt in seen:
                    raise DataDirError(f"{path}:{line.lineno}: utterance {utt!r} also on line {seen[utt]}")
                seen[utt] = line.lineno
                if utt2spk.get(utt) != line.key:
                    where = (f"utt2spk says {utt2spk[utt]!r}" if utt in utt2spk
                             else "it is not in utt2spk")
                    raise DataDirError(f"{path}:{line.lineno}: utterance {utt!r} listed for "
                                       f"speaker {line.key!r} but {where}")
        missing = [u for u in utt2spk if u not in seen]
        if missing:
            raise DataDirError(f"{path}: spk2utt does not list {len(missing)} utterance(s) of "
                               f"utt2spk, e.g. {missing[:3]}")

    def _check_wav(self, utts: list[str], no_wav: bool) -> None:
        if not self.has("wav.scp"):
            if self.has("segments"):
                raise DataDirError(f"{self.file('segments')}: exists but there is no wav.scp")
            if not no_wav:
                raise DataDirError(f"{self.file('wav.scp')}: missing (pass no_wav=True if by design)")
            return
        wav_lines = self._sorted_lines("wav.scp")
        for line in wav_lines:
            if line.value.startswith("~"):
                raise DataDirError(f"{self.file('wav.scp')}:{line.lineno}: do not use '~' in wav.scp")
        if not self.has("segments"):
            self._same_keys("wav.scp", wav_lines, utts, "utt2spk")
            return
        seg_lines = self._sorted_lines("segments")
        for line in seg_lines:
            fields = line.value.split()
            if len(fields) != 3 or not _segment_times_ok(fields[1], fields[2]):
                raise DataDirError(f"{self.file('segments')}:{line.lineno}: expected "
                                   f"'<utt> <recording> <start> <end>' with end > start")
        self._same_keys("segments", seg_lines, utts, "utt2spk")
        recordings = sorted({line.value.split()[0] for line in seg_lines})
        self._same_keys("wav.scp", wav_lines, recordings, "the recordings of segments")


def _positive(text: str, kind) -> bool:
    try:
        if kind is int:
            return int(text) > 0
        return float(text) > 0
    except ValueError:
        return False


def _segment_times_ok(start: str, end: str) -> bool:
    try:
        return float(end) > float(start)
    except ValueError:
        return False


# -- splitting --------------------------------------------------------------------------

def _split_speakers(speakers: list[str], counts: dict[str, int], n: int) -> list[list[str]]:
    """Contiguous runs of speakers with balanced utterance counts (split_scp.pl --utt2spk):
    an even split by speaker count, then boundary speakers move to a neighbour while that
    shrinks the difference in utterance counts."""
    if len(speakers) < n:
        raise DataDirError(f"cannot split {len(speakers)} speaker(s) into {n} parts "
                           f"(each speaker stays in one part)")
    parts: list[list[str]] = [[] for _ in range(n)]
    for i, spk in enumerate(speakers):
        parts[i * n // len(speakers)].append(spk)
    sizes = [sum(counts[s] for s in p) for p in parts]
    changed = True
    while changed:
        changed = False
        for j in range(n):
            if j + 1 < n and parts[j]:
                c = counts[parts[j][-1]]
                if abs((sizes[j + 1] + c) - (sizes[j] - c)) < abs(sizes[j + 1] - sizes[j]):
                    parts[j + 1].insert(0, parts[j].pop())
                    sizes[j] -= c
                    sizes[j + 1] += c
                    changed = True
            if j > 0 and parts[j]:
                c = counts[parts[j][0]]
                if abs((sizes[j] - c) - (sizes[j - 1] + c)) < abs(sizes[j] - sizes[j - 1]):
                    parts[j - 1].append(parts[j].pop(0))
                    sizes[j] -= c
                    sizes[j - 1] += c
                    changed = True
    empty = [j + 1 for j, p in enumerate(parts) if not p]
    if empty:
        raise DataDirError(f"splitting into {n} parts leaves part(s) {empty} empty "
                           f"(too few speakers?)")
    return parts


def _filter_lines(path: str, keep: set[str]) -> bytes:
    """Lines of `path` whose first field is in `keep`, original text and order (filter_scp.pl)."""
    with open(path, "rb") as f:
        return b"".join(line for line in f
                        if line.split(None, 1) and line.split(None, 1)[0].decode("utf-8") in keep)


def split_data(datadir: str | DataDir, n: int) -> list[DataDir]:
    """`utils/split_data.sh <data> n`: writes `<data>/split<n>/{1..n}/` and returns them.

    Speakers stay whole and parts are balanced by utterance count; utterance- and speaker-
    indexed files are filtered into each part and spk2utt is regenerated. Parts are always
    rewritten (atomically, file by file).
    """
    data = datadir if isinstance(datadir, DataDir) else DataDir(datadir)
    if n < 1:
        raise ValueError(f"number of parts must be >= 1, got {n}")
    utt2spk = data.utt2spk
    speakers, counts = [], {}
    for spk in utt2spk.values():  # speakers in utt2spk line order, as split_scp.pl sees them
        if spk not in counts:
            speakers.append(spk)
            counts[spk] = 0
        counts[spk] += 1
    parts = _split_speakers(speakers, counts, n)
    utt_files = [f for f in UTT_FILES if data.has(f)]
    if not data.has("segments") and data.has("wav.scp"):
        utt_files.append("wav.scp")
    spk_files = [f for f in SPK_FILES if data.has(f)]
    out = []
    for j, part in enumerate(parts, 1):
        d = os.path.join(data.path, f"split{n}", str(j))
        os.makedirs(d, exist_ok=True)
        spk_set = set(part)
        utts = {u for u, s in utt2spk.items() if s in spk_set}
        write_bytes(os.path.join(d, "utt2spk"), _filter_lines(data.file("utt2spk"), utts))
        write_kaldi_map(os.path.join(d, "spk2utt"),
                        utt2spk_to_spk2utt({u: utt2spk[u] for u in utts}))
        for name in utt_files:
            write_bytes(os.path.join(d, name), _filter_lines(data.file(name), utts))
        for name in spk_files:
            write_bytes(os.path.join(d, name), _filter_lines(data.file(name), spk_set))
        if data.has("segments"):
            seg = _filter_lines(data.file("segments"), utts)
            write_bytes(os.path.join(d, "segments"), seg)
            recordings = {line.split()[1].decode("utf-8") for line in seg.splitlines() if line.strip()}
            for name in ("wav.scp", "reco2file_and_channel"):
                if data.has(name):
                    write_bytes(os.path.join(d, name), _filter_lines(data.file(name), recordings))
        out.append(DataDir(d))
    return out
