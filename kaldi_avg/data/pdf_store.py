"""Every utterance's per-frame pdf-ids in one memory-mapped store, written once and shared.

docs/kaldi-formats.md 2.4, 8.4: the alignment dir's `ali.*.gz` (transition-ids) are mapped
through `final.mdl`'s transition model, as `ali-to-pdf` does. A dict of arrays costs every rank
the whole corpus in private memory; this store is built once and every rank maps the same files
read-only, so the ranks of a node share its pages through the page cache. The ranks build it
together: rank r converts the archives r, r + N, ... (one pdf file each), then rank 0 writes the
index, so a rank's share of the work, not the corpus, sets the time it takes.

Layout of the store directory (each file written atomically, `header.json` last; a rebuild
removes `header.json` first, so a store cut off while being rebuilt never opens):
    pdfs.<k>.bin  the pdf-ids of the k-th alignment archive (ali.*.gz in numeric order), back to
                  back in archive order; int16 when num_pdfs <= 32767, else int32, little-endian
    keys.npy      utterance ids, UTF-8, sorted (C order), fixed width
    parts.npy     int32: which pdfs.<k>.bin holds keys[i]'s pdf-ids
    offsets.npy   int64: where they start in it
    lengths.npy   int32: how many frames keys[i] has
    header.json   version, dtype, counts, and the alignments it was built from: the real path
                  of the alignment dir and the size and mtime (ns) of num_jobs, final.mdl and
                  every ali.N.gz. When any of them differs the store is stale.
While being built, each archive's keys and lengths wait in part.<k>.keys.npy/.lengths.npy.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from array import array
from collections.abc import Iterator, Mapping

import numpy as np

from ..atomic import atomic_path, make_dirs, write_text
from ..kaldi.alignment import alignment_archives
from ..kaldi.binary import KaldiFormatError
from ..kaldi.tables import read_int_vector_stream
from ..kaldi.transition import TransitionModel, read_transition_model

FORMAT_VERSION = 2
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
        self._parts = np.load(os.path.join(store_dir, "parts.npy"), mmap_mode="r")
        self._offsets = np.load(os.path.join(store_dir, "offsets.npy"), mmap_mode="r")
        self._lengths = np.load(os.path.join(store_dir, "lengths.npy"), mmap_mode="r")
        self._pdfs = [_map_pdfs(os.path.join(store_dir, _pdfs_name(k)), self.dtype) for k in range(header["num_parts"])]

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
        return self._pdfs[int(self._parts[i])][start:start + int(self._lengths[i])]

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


def _pdfs_name(k: int) -> str:
    return f"pdfs.{k}.bin"


def _map_pdfs(path: str, dtype: np.dtype) -> np.ndarray:
    size = os.path.getsize(path)
    if not size:   # mmap cannot map an empty file
        return np.zeros(0, dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=(size // dtype.itemsize,)))


def build_pdf_store(ali_dir: str, store_dir: str, trans_model: TransitionModel | None = None,
                    comm=None) -> PdfStore:
    """Writes the store from `ali_dir`, one utterance in memory at a time; with `comm` (a
    communicator: rank, size, barrier) every rank calls it and converts its share of the
    archives. Returns the opened store on every rank.

    Utterances in two archives and transition-ids outside the model are errors naming the
    archive and the utterance, as `read_alignments`.
    """
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    if trans_model is None:
        trans_model = read_transition_model(os.path.join(ali_dir, "final.mdl"))
    archives = alignment_archives(ali_dir)
    dtype = pdf_dtype(trans_model.num_pdfs)
    if rank == 0:
        make_dirs(store_dir)
        header_path = os.path.join(store_dir, HEADER)
        if os.path.exists(header_path):
            os.remove(header_path)  # the old store is invalid from here on
        for name in os.listdir(store_dir):   # and its files go (an older layout's, or more archives')
            os.remove(os.path.join(store_dir, name))
    if comm is not None:
        comm.barrier()
    for k in range(rank, len(archives), size):
        _build_part(archives[k], os.path.join(store_dir, _pdfs_name(k)), trans_model, dtype,
                    os.path.join(store_dir, f"part.{k}"))
    if comm is not None:
        comm.barrier()
    if rank == 0:
        _write_index(ali_dir, store_dir, archives, trans_model.num_pdfs, dtype)
    if comm is not None:
        comm.barrier()
    return PdfStore.open(store_dir)


def _build_part(archive: str, pdfs_path: str, trans_model: TransitionModel, dtype: np.dtype, part: str) -> None:
    """One alignment archive: its pdf-ids to `pdfs_path`, its keys and lengths to `part`.*.npy."""
    keys: list[bytes] = []
    lengths = array("i")
    with atomic_path(pdfs_path) as tmp, open(tmp, "wb") as out:
        for utt, tids in _stream_archive(archive):
            pdfs = trans_model.tids_to_pdfs(tids, what=f"{archive}: utterance {utt!r}")
            out.write(pdfs.astype(dtype).tobytes())
            keys.append(utt.encode("utf-8"))
            lengths.append(len(pdfs))
    for name, values in ((".keys.npy", np.array(keys, dtype=f"S{max(map(len, keys), default=1)}")),
                         (".lengths.npy", np.asarray(lengths, np.int32))):
        with atomic_path(part + name) as tmp, open(tmp, "wb") as f:
            np.save(f, values)


def _write_index(ali_dir: str, store_dir: str, archives: list[str], num_pdfs: int, dtype: np.dtype) -> None:
    """The sorted index over every archive's part, then the header; the parts' key files go."""
    keys, lengths, parts, offsets = [], [], [], []
    for k in range(len(archives)):
        part = os.path.join(store_dir, f"part.{k}")
        part_keys, part_lengths = np.load(part + ".keys.npy"), np.load(part + ".lengths.npy")
        keys.append(part_keys)
        lengths.append(part_lengths)
        parts.append(np.full(len(part_keys), k, np.int32))
        offsets.append(np.concatenate([[0], np.cumsum(part_lengths, dtype=np.int64)[:-1]]) if len(part_keys)
                       else np.zeros(0, np.int64))
    width = max((k.dtype.itemsize for k in keys), default=1)
    key_array = np.concatenate([k.astype(f"S{width}") for k in keys]) if keys else np.zeros(0, "S1")
    part_array, length_array = np.concatenate(parts), np.concatenate(lengths)
    order = np.argsort(key_array, kind="stable")
    key_array = key_array[order]
    dup = np.flatnonzero(key_array[1:] == key_array[:-1])
    if dup.size:
        first, second = order[dup[0]], order[dup[0] + 1]
        raise KaldiFormatError(f"{archives[part_array[second]]}: utterance {key_array[dup[0]].decode()!r} "
                               f"is also in {archives[part_array[first]]}")
    for name, values in (("keys.npy", key_array), ("parts.npy", part_array[order]),
                         ("offsets.npy", np.concatenate(offsets)[order]), ("lengths.npy", length_array[order])):
        with atomic_path(os.path.join(store_dir, name)) as tmp, open(tmp, "wb") as f:
            np.save(f, values)
    header = {"version": FORMAT_VERSION, "dtype": dtype.str, "num_pdfs": num_pdfs, "num_parts": len(archives),
              "num_utts": len(key_array), "num_frames": int(length_array.sum()),
              "source": alignment_signature(ali_dir)}
    write_text(os.path.join(store_dir, HEADER), json.dumps(header, indent=1) + "\n")
    for k in range(len(archives)):
        for name in (".keys.npy", ".lengths.npy"):
            os.remove(os.path.join(store_dir, f"part.{k}{name}"))


def _stream_archive(path: str) -> Iterator[tuple[str, np.ndarray]]:
    last = None
    try:
        with gzip.open(path, "rb") as f:
            for last, tids in read_int_vector_stream(f, path):
                yield last, tids
    except zlib.error as e:  # corrupt compressed data (cut-off streams raise EOFError inside)
        after = f" (last complete entry {last!r})" if last else ""
        raise KaldiFormatError(f"{path}: unreadable gzip stream{after}: {e}") from None


def ensure_pdf_store(ali_dir: str, store_dir: str, trans_model: TransitionModel | None = None,
                     comm=None) -> PdfStore:
    """The store of `ali_dir` in `store_dir`, (re)built when missing or stale: by this process,
    or with `comm` by all its ranks together (rank 0 decides)."""
    fresh = None
    if comm is None or comm.rank == 0:
        try:
            fresh = PdfStore.open(store_dir, ali_dir)
        except StalePdfStore:
            pass
    stale = fresh is None if comm is None else comm.allgather_object(fresh is None)[0]
    if stale:
        return build_pdf_store(ali_dir, store_dir, trans_model, comm)
    return fresh if fresh is not None else PdfStore.open(store_dir)
