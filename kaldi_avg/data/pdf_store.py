"""Every utterance's per-frame pdf-ids in one memory-mapped store, written once and shared.

docs/kaldi-formats.md 2.4, 8.4: the alignment dir's `ali.*.gz` (transition-ids) are mapped
through `final.mdl`'s transition model, as `ali-to-pdf` does. A dict of arrays costs every rank
the whole corpus in private memory; this store is built once (by rank 0, streaming the
archives) and every rank maps the same files read-only, so the ranks of a node share its pages
through the page cache.

Layout of the store directory (each file written atomically, `header.json` last; a rebuild
removes `header.json` first, so a store cut off while being rebuilt never opens):
    pdfs.bin      all pdf-ids back to back, archive order; int16 when num_pdfs <= 32767, else
                  int32, little-endian
    keys.npy      utterance ids, UTF-8, sorted (C order), fixed width
    offsets.npy   int64: where keys[i]'s pdf-ids start in pdfs.bin
    lengths.npy   int32: how many frames keys[i] has
    header.json   version, dtype, counts, and the alignments it was built from: the real path
                  of the alignment dir and the size and mtime (ns) of num_jobs, final.mdl and
                  every ali.N.gz. When any of them differs the store is stale.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from array import array
from collections.abc import Iterator, Mapping

import numpy as np

from ..atomic import atomic_path, write_text
from ..kaldi.alignment import alignment_archives
from ..kaldi.binary import KaldiFormatError
from ..kaldi.tables import read_int_vector_stream
from ..kaldi.transition import TransitionModel, read_transition_model

FORMAT_VERSION = 1
HEADER = "header.json"


class StalePdfStore(KaldiFormatError):
    """The store is missing, incomplete, or was built from other alignments."""


def pdf_dtype(num_pdfs: int) -> np.dtype:
    return np.dtype("<i2" if num_pdfs <= 32767 else "<i4")


def alignment_signature(ali_dir: str) -> dict:
    """What the store is invalidated by: {file name: [size, mtime_ns]} of the alignment dir's
    inputs, and the dir's real path."""
    names = ["num_jobs", "final.mdl"] + [os.path.basename(p) for p in alignment_archives(ali_dir)]
    files = {}
    for name in names:
        st = os.stat(os.path.join(ali_dir, name))
        files[name] = [st.st_size, st.st_mtime_ns]
    return {"ali_dir": os.path.realpath(ali_dir), "files": files}


class PdfStore(Mapping):
    """Read-only Mapping[str, np.ndarray] of pdf-ids by utterance over the store's files.

    Values are read-only views into the shared mapping (int16 or int32); keys iterate in C
    order without being materialised; a lookup is a binary search in the mapped keys.
    """

    def __init__(self, store_dir: str, header: dict):
        self.dir = store_dir
        self.header = header
        self.num_pdfs: int = header["num_pdfs"]
        self.num_frames: int = header["num_frames"]
        self.dtype = np.dtype(header["dtype"])
        self._keys = np.load(os.path.join(store_dir, "keys.npy"), mmap_mode="r")
        self._offsets = np.load(os.path.join(store_dir, "offsets.npy"), mmap_mode="r")
        self._lengths = np.load(os.path.join(store_dir, "lengths.npy"), mmap_mode="r")
        if self.num_frames:  # mmap cannot map an empty file
            self._pdfs = np.asarray(np.memmap(os.path.join(store_dir, "pdfs.bin"), dtype=self.dtype,
                                              mode="r", shape=(self.num_frames,)))
        else:
            self._pdfs = np.zeros(0, self.dtype)

    @classmethod
    def open(cls, store_dir: str, ali_dir: str | None = None) -> PdfStore:
        """Opens a complete store; with `ali_dir`, raises StalePdfStore unless it was built
        from that alignment dir as it is now."""
        try:
            with open(os.path.join(store_dir, HEADER)) as f:
                header = json.load(f)
        except FileNotFoundError:
            raise StalePdfStore(f"{store_dir}: no pdf store (or one cut off while being built)") from None
        if header.get("version") != FORMAT_VERSION:
            raise StalePdfStore(f"{store_dir}: store format {header.get('version')}, expected {FORMAT_VERSION}")
        if ali_dir is not None and header["source"] != alignment_signature(ali_dir):
            raise StalePdfStore(f"{store_dir}: built from other alignments than {ali_dir} has now")
        return cls(store_dir, header)

    def _row(self, utt) -> int:
        """Index of `utt` in the sorted keys, or -1."""
        if not isinstance(utt, str):
            return -1
        key = utt.encode("utf-8")
        if len(key) > self._keys.dtype.itemsize:
            return -1
        i = int(np.searchsorted(self._keys, key))
        return i if i < len(self._keys) and self._keys[i] == key else -1

    def __getitem__(self, utt: str) -> np.ndarray:
        i = self._row(utt)
        if i < 0:
            raise KeyError(utt)
        start = int(self._offsets[i])
        return self._pdfs[start:start + int(self._lengths[i])]

    def length(self, utt: str) -> int:
        """Frames aligned for `utt`, without touching its pdf-ids."""
        i = self._row(utt)
        if i < 0:
            raise KeyError(utt)
        return int(self._lengths[i])

    def __contains__(self, utt) -> bool:
        return self._row(utt) >= 0

    def __iter__(self) -> Iterator[str]:
        return (k.decode("utf-8") for k in self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def build_pdf_store(ali_dir: str, store_dir: str, trans_model: TransitionModel | None = None) -> PdfStore:
    """Writes the store from `ali_dir` (one process only), one utterance in memory at a time.

    Utterances in two archives and transition-ids outside the model are errors naming the
    archive and the utterance, as `read_alignments`.
    """
    if trans_model is None:
        trans_model = read_transition_model(os.path.join(ali_dir, "final.mdl"))
    source = alignment_signature(ali_dir)
    archives = alignment_archives(ali_dir)
    os.makedirs(store_dir, exist_ok=True)
    header_path = os.path.join(store_dir, HEADER)
    if os.path.exists(header_path):
        os.remove(header_path)  # the old store is invalid from here on
    dtype = pdf_dtype(trans_model.num_pdfs)
    keys: list[bytes] = []
    offsets, lengths, archive_of = array("q"), array("i"), array("H")
    frames = 0
    with atomic_path(os.path.join(store_dir, "pdfs.bin")) as tmp, open(tmp, "wb") as out:
        for a, path in enumerate(archives):
            for utt, tids in _stream_archive(path):
                pdfs = trans_model.tids_to_pdfs(tids, what=f"{path}: utterance {utt!r}")
                out.write(pdfs.astype(dtype).tobytes())
                keys.append(utt.encode("utf-8"))
                offsets.append(frames)
                lengths.append(len(pdfs))
                archive_of.append(a)
                frames += len(pdfs)
    key_array = np.array(keys, dtype=f"S{max(map(len, keys), default=1)}")
    order = np.argsort(key_array, kind="stable")
    key_array = key_array[order]
    dup = np.flatnonzero(key_array[1:] == key_array[:-1])
    if dup.size:
        first, second = order[dup[0]], order[dup[0] + 1]
        raise KaldiFormatError(f"{archives[archive_of[second]]}: utterance {keys[second].decode()!r} "
                               f"is also in {archives[archive_of[first]]}")
    for name, values in (("keys.npy", key_array), ("offsets.npy", np.asarray(offsets, np.int64)[order]),
                         ("lengths.npy", np.asarray(lengths, np.int32)[order])):
        with atomic_path(os.path.join(store_dir, name)) as tmp, open(tmp, "wb") as f:
            np.save(f, values)
    header = {"version": FORMAT_VERSION, "dtype": dtype.str, "num_pdfs": trans_model.num_pdfs,
              "num_utts": len(keys), "num_frames": frames, "source": source}
    write_text(header_path, json.dumps(header, indent=1) + "\n")
    return PdfStore(store_dir, header)


def _stream_archive(path: str) -> Iterator[tuple[str, np.ndarray]]:
    last = None
    try:
        with gzip.open(path, "rb") as f:
            for last, tids in read_int_vector_stream(f, path):
                yield last, tids
    except zlib.error as e:  # corrupt compressed data (cut-off streams raise EOFError inside)
        after = f" (last complete entry {last!r})" if last else ""
        raise KaldiFormatError(f"{path}: unreadable gzip stream{after}: {e}") from None


def ensure_pdf_store(ali_dir: str, store_dir: str, trans_model: TransitionModel | None = None) -> PdfStore:
    """The store of `ali_dir` in `store_dir`, (re)built when missing or stale (rank 0 only;
    the other ranks `PdfStore.open` it after a barrier)."""
    try:
        return PdfStore.open(store_dir, ali_dir)
    except StalePdfStore:
        return build_pdf_store(ali_dir, store_dir, trans_model)
