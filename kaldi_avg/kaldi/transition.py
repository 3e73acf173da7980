"""HmmTopology and TransitionModel: read, write (byte-identical), transition-id -> pdf-id, and
Kaldi's per-transition-id queries (phone, HMM state, IsSelfLoop, IsFinal, tuple/pair lookups).

Formats: docs/kaldi-formats.md sections 2.2-2.4 (Kaldi `src/hmm/hmm-topology.cc`,
`src/hmm/transition-model.cc`). Any file that starts with a transition model (a GMM or an
nnet3 `final.mdl`) can be read; the rest of the file is left to the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .binary import KaldiFormatError, KaldiReader, KaldiWriter


@dataclass
class HmmState:
    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: list[tuple[int, float]]


@dataclass
class HmmTopology:
    phones: list[int]
    phone2idx: list[int]
    entries: list[list[HmmState]]

    @property
    def is_hmm(self) -> bool:
        return all(s.forward_pdf_class == s.self_loop_pdf_class
                   for e in self.entries for s in e)

    def entry_for_phone(self, phone: int) -> list[HmmState]:
        if phone < 0 or phone >= len(self.phone2idx) or self.phone2idx[phone] < 0:
            raise KaldiFormatError(f"phone {phone} is not covered by the topology")
        return self.entries[self.phone2idx[phone]]

    @classmethod
    def read(cls, r: KaldiReader) -> HmmTopology:
        r.expect_token("<Topology>")
        if not r.binary:
            return cls._read_text(r)
        phones = r.read_int_vector()
        phone2idx = r.read_int_vector()
        n = r.read_int32()
        is_hmm = n != -1
        if not is_hmm:
            n = r.read_int32()
        entries = []
        for _ in range(n):
            states = []
            for _ in range(r.read_int32()):
                fpc = r.read_int32()
                slpc = fpc if is_hmm else r.read_int32()
                trans = [(r.read_int32(), r.read_float()) for _ in range(r.read_int32())]
                states.append(HmmState(fpc, slpc, trans))
            entries.append(states)
        r.expect_token("</Topology>")
        return cls(phones, phone2idx, entries)

    @classmethod
    def _read_text(cls, r: KaldiReader) -> HmmTopology:
        entries, entry_phones = [], []
        while True:
            tok = r.read_token()
            if tok == "</Topology>":
                break
            if tok != "<TopologyEntry>":
                raise r.error(f"expected <TopologyEntry> or </Topology>, got {tok!r}")
            r.expect_token("<ForPhones>")
            phones = []
            while (tok := r.read_token()) != "</ForPhones>":
                phones.append(int(tok))
            states = []
            while (tok := r.read_token()) != "</TopologyEntry>":
                if tok != "<State>":
                    raise r.error(f"expected <State>, got {tok!r}")
                idx = r.read_int32()
                if idx != len(states):
                    raise r.error(f"states must be numbered in order; got {idx}")
                tok = r.read_token()
                fpc = slpc = -1
                if tok == "<PdfClass>":
                    fpc = slpc = r.read_int32()
                    tok = r.read_token()
                elif tok == "<ForwardPdfClass>":
                    fpc = r.read_int32()
                    r.expect_token("<SelfLoopPdfClass>")
                    slpc = r.read_int32()
                    tok = r.read_token()
                trans = []
                while tok == "<Transition>":
                    trans.append((r.read_int32(), r.read_float()))
                    tok = r.read_token()
                if tok != "</State>":
                    raise r.error(f"expected </State>, got {tok!r}")
                states.append(HmmState(fpc, slpc, trans))
            entries.append(states)
            entry_phones.append(phones)
        all_phones = sorted(p for ps in entry_phones for p in ps)
        if len(set(all_phones)) != len(all_phones):
            raise r.error("a phone appears in two topology entries")
        phone2idx = [-1] * (max(all_phones) + 1 if all_phones else 1)
        for i, ps in enumerate(entry_phones):
            for p in ps:
                phone2idx[p] = i
        return cls(all_phones, phone2idx, entries)

    def write(self, w: KaldiWriter) -> None:
        w.token("<Topology>")
        if not w.binary:
            w.newline()
            for i, states in enumerate(self.entries):
                w.token("<TopologyEntry>")
                w.newline()
                w.token("<ForPhones>")
                w.newline()
                for p, idx in enumerate(self.phone2idx):
                    if idx == i:
                        w.raw(f"{p} ")
                w.newline()
                w.token("</ForPhones>")
                w.newline()
                for j, s in enumerate(states):
                    w.token("<State>")
                    w.int32(j)
                    if s.forward_pdf_class != -1 or s.self_loop_pdf_class != -1:
                        if self.is_hmm:
                            w.token("<PdfClass>")
                            w.int32(s.forward_pdf_class)
                        else:
                            w.token("<ForwardPdfClass>")
                            w.int32(s.forward_pdf_class)
                            w.token("<SelfLoopPdfClass>")
                            w.int32(s.self_loop_pdf_class)
                    for dst, prob in s.transitions:
                        w.token("<Transition>")
                        w.int32(dst)
                        w.float32(prob)
                    w.token("</State>")
                    w.newline()
                w.token("</TopologyEntry>")
                w.newline()
            w.token("</Topology>")
            w.newline()
            return
        w.int_vector(self.phones)
        w.int_vector(self.phone2idx)
        if not self.is_hmm:
            w.int32(-1)
        w.int32(len(self.entries))
        for states in self.entries:
            w.int32(len(states))
            for s in states:
                w.int32(s.forward_pdf_class)
                if not self.is_hmm:
                    w.int32(s.self_loop_pdf_class)
                w.int32(len(s.transitions))
                for dst, prob in s.transitions:
                    w.int32(dst)
                    w.float32(prob)
        w.token("</Topology>")


@dataclass
class TransitionModel:
    topology: HmmTopology
    tuples: list[tuple[int, int, int, int]]  # (phone, hmm_state, forward_pdf, self_loop_pdf)
    log_probs: np.ndarray  # index = transition-id; element 0 unused
    _tid2pdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        pdfs = [0]
        # per transition-id (index 0 unused): phone, HMM state, transition state (1-based, the
        # tuple's index + 1), transition index, IsSelfLoop, IsFinal (the transition enters the
        # topology entry's last state), as src/hmm/transition-model.cc numbers them
        info = [(0, 0, 0, 0, False, False)]
        self._tstate_first_tid = [0]
        for tstate, (phone, hmm_state, fpdf, slpdf) in enumerate(self.tuples, start=1):
            states = self.topology.entry_for_phone(phone)
            if hmm_state >= len(states):
                raise KaldiFormatError(f"tuple {(phone, hmm_state)}: phone has {len(states)} states")
            self._tstate_first_tid.append(len(pdfs))
            for index, (dst, _) in enumerate(states[hmm_state].transitions):
                pdfs.append(slpdf if dst == hmm_state else fpdf)
                info.append((phone, hmm_state, tstate, index, dst == hmm_state, dst + 1 == len(states)))
        self._tstate_first_tid.append(len(pdfs))
        self._tid2pdf = np.asarray(pdfs, dtype=np.int32)
        cols = list(zip(*info))
        self._tid_phone, self._tid_hmm_state, self._tid_tstate, self._tid_index = (
            np.asarray(c, dtype=np.int32) for c in cols[:4])
        self._tid_self_loop, self._tid_final = (np.asarray(c, dtype=bool) for c in cols[4:])
        self._tuple2tstate = {t: i for i, t in enumerate(self.tuples, start=1)}
        self.log_probs = np.asarray(self.log_probs, dtype=np.float32)
        if self.log_probs.size != self._tid2pdf.size:
            raise KaldiFormatError(
                f"transition model has {self._tid2pdf.size - 1} transition-ids but "
                f"{self.log_probs.size} log-probs (expected one more than the ids)")

    @property
    def num_pdfs(self) -> int:
        return 1 + max(max(t[2], t[3]) for t in self.tuples)

    @property
    def num_transition_ids(self) -> int:
        return self._tid2pdf.size - 1

    def transition_id_to_pdf_array(self) -> np.ndarray:
        """Index = transition-id (0 unused), value = pdf-id, as `ali-to-pdf` maps them."""
        return self._tid2pdf

    def transition_id_phones(self) -> np.ndarray:
        """Index = transition-id (0 unused), value = phone (`TransitionIdToPhone`)."""
        return self._tid_phone

    def transition_id_hmm_states(self) -> np.ndarray:
        """`TransitionIdToHmmState` per transition-id."""
        return self._tid_hmm_state

    def transition_id_states(self) -> np.ndarray:
        """`TransitionIdToTransitionState` per transition-id (transition states are 1-based)."""
        return self._tid_tstate

    def transition_id_indexes(self) -> np.ndarray:
        """`TransitionIdToTransitionIndex` per transition-id."""
        return self._tid_index

    def self_loop_mask(self) -> np.ndarray:
        """`IsSelfLoop` per transition-id."""
        return self._tid_self_loop

    def final_mask(self) -> np.ndarray:
        """`IsFinal` per transition-id: the transition enters the HMM's final (last) state."""
        return self._tid_final

    def tuple_to_transition_state(self, phone: int, hmm_state: int, forward_pdf: int, self_loop_pdf: int) -> int:
        """`TupleToTransitionState`; KaldiFormatError if the model has no such tuple."""
        try:
            return self._tuple2tstate[(phone, hmm_state, forward_pdf, self_loop_pdf)]
        except KeyError:
            raise KaldiFormatError(f"the transition model has no tuple (phone {phone}, HMM state {hmm_state}, "
                                   f"pdfs {forward_pdf}/{self_loop_pdf})") from None

    def pair_to_transition_id(self, transition_state: int, transition_index: int) -> int:
        """`PairToTransitionId`."""
        ok = 1 <= transition_state <= len(self.tuples) and transition_index >= 0
        tid = self._tstate_first_tid[transition_state] + transition_index if ok else -1
        if not ok or tid >= self._tstate_first_tid[transition_state + 1]:
            raise KaldiFormatError(f"no transition {transition_index} in transition state {transition_state}")
        return tid

    def tids_to_pdfs(self, tids, what: str = "alignment") -> np.ndarray:
        tids = np.asarray(tids)
        if tids.size and (tids.min() < 1 or tids.max() > self.num_transition_ids):
            bad = tids[(tids < 1) | (tids > self.num_transition_ids)][0]
            raise KaldiFormatError(f"{what}: transition-id {int(bad)} out of range "
                                   f"1..{self.num_transition_ids}")
        return self._tid2pdf[tids]

    @classmethod
    def read(cls, r: KaldiReader) -> TransitionModel:
        r.expect_token("<TransitionModel>")
        topo = HmmTopology.read(r)
        tok = r.read_token()
        if tok not in ("<Triples>", "<Tuples>"):
            raise r.error(f"expected <Triples> or <Tuples>, got {tok!r}")
        n = r.read_int32()
        tuples = []
        for _ in range(n):
            ph, hs, fp = r.read_int32(), r.read_int32(), r.read_int32()
            sp = fp if tok == "<Triples>" else r.read_int32()
            tuples.append((ph, hs, fp, sp))
        r.expect_token("</Triples>" if tok == "<Triples>" else "</Tuples>")
        r.expect_token("<LogProbs>")
        log_probs = r.read_vector()
        r.expect_token("</LogProbs>")
        r.expect_token("</TransitionModel>")
        try:
            return cls(topo, tuples, log_probs)
        except KaldiFormatError as e:
            raise r.error(str(e)) from None

    def write(self, w: KaldiWriter) -> None:
        hmm = self.topology.is_hmm
        w.token("<TransitionModel>")
        w.newline()
        self.topology.write(w)
        w.token("<Triples>" if hmm else "<Tuples>")
        w.int32(len(self.tuples))
        w.newline()
        for ph, hs, fp, sp in self.tuples:
            w.int32(ph)
            w.int32(hs)
            w.int32(fp)
            if not hmm:
                w.int32(sp)
            w.newline()
        w.token("</Triples>" if hmm else "</Tuples>")
        w.newline()
        w.token("<LogProbs>")
        w.newline()
        w.vector(self.log_probs)
        w.token("</LogProbs>")
        w.newline()
        w.token("</TransitionModel>")
        w.newline()

    def to_bytes(self, binary: bool = True) -> bytes:
        w = KaldiWriter(binary)
        self.write(w)
        return w.getvalue()


def read_transition_model(path: str) -> TransitionModel:
    """Reads the transition model at the start of `path` (GMM or nnet3 `.mdl`, binary or text)."""
    return TransitionModel.read(KaldiReader.open(path))
