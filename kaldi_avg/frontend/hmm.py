"""Bridges between Kaldi files and kaldi-hmm-gmm (khg) objects: topology, tree, transition model.

khg can write a tree in Kaldi format but reads neither trees nor transition models, and its
TransitionModel only prints Kaldi's text form.  Here:
  * a tree file is loaded through the pickle state khg exposes (the Kaldi binary bytes);
  * a khg TransitionModel is rebuilt from tree + topology and given the file's log-probs, after
    checking that it has the file's tuples (so transition-ids are numbered identically);
  * a khg TransitionModel becomes our `TransitionModel` (byte-exact Kaldi writer), with the
    log-probs taken at full float precision rather than from the 6-digit text.
"""
from __future__ import annotations

import kaldi_hmm_gmm as khg
import numpy as np

from ..atomic import atomic_path
from ..kaldi.binary import BINARY_HEADER, KaldiFormatError, KaldiReader, KaldiWriter
from ..kaldi.transition import HmmTopology, TransitionModel


def khg_topology(topo: HmmTopology) -> khg.HmmTopology:
    w = KaldiWriter(binary=False)
    topo.write(w)
    out = khg.HmmTopology()
    out.read(w.getvalue().decode())
    return out


def read_topology(path: str) -> HmmTopology:
    """`data/lang/topo` (text) or any binary topology file."""
    return HmmTopology.read(KaldiReader.open(path))


def read_tree(path: str) -> khg.ContextDependency:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != BINARY_HEADER or not data[2:].startswith(b"ContextDependency "):
        raise KaldiFormatError(f"{path}: not a binary Kaldi tree (expected \\0B ContextDependency)")
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    tree.__setstate__((np.frombuffer(data[2:], np.int8).tolist(),))
    return tree


def write_tree(tree: khg.ContextDependency, path: str) -> None:
    with atomic_path(path) as tmp:
        tree.write(True, tmp)


def from_khg(tm: khg.TransitionModel) -> TransitionModel:
    parsed = TransitionModel.read(KaldiReader.from_bytes(str(tm).encode(), source="khg TransitionModel"))
    return TransitionModel(parsed.topology, parsed.tuples, np.asarray(tm.log_probs, np.float32))


def _non_self_loop_log_probs(tm: TransitionModel, log_probs: np.ndarray) -> list[float]:
    """Kaldi's ComputeDerivedOfProbs: log(1 - self-loop prob) per transition-state (1-based)."""
    out = [0.0]
    tid = 1
    for phone, hmm_state, _, _ in tm.tuples:
        value = 0.0
        for dst, _ in tm.topology.entry_for_phone(phone)[hmm_state].transitions:
            if dst == hmm_state:
                value = float(np.log(max(1.0 - np.exp(np.float64(log_probs[tid])), 1e-10)))
            tid += 1
        out.append(value)
    return out


def to_khg(tm: TransitionModel, tree: khg.ContextDependency, source: str = "transition model"
           ) -> khg.TransitionModel:
    """A khg TransitionModel equal to `tm` (same tuples, same log-probs)."""
    out = khg.TransitionModel(tree, khg_topology(tm.topology))
    rebuilt = from_khg(out)
    if rebuilt.tuples != tm.tuples:
        raise KaldiFormatError(f"{source}: its transition model does not match the tree "
                               f"({len(tm.tuples)} tuples in the file, {len(rebuilt.tuples)} from the tree)")
    # khg's pickle state: (tuples, topology, state2id, id2state, id2pdf, num_pdfs, log_probs,
    # non_self_loop_log_probs); it only takes effect on an object made with __new__
    state = list(out.__getstate__())
    state[6] = [float(x) for x in tm.log_probs]
    state[7] = _non_self_loop_log_probs(tm, tm.log_probs)
    result = khg.TransitionModel.__new__(khg.TransitionModel)
    result.__setstate__(tuple(state))
    return result
