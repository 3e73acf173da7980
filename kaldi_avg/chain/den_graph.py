"""The denominator and normalization FSTs of `chain-make-den-fst` (docs/chain.md 2).

Kaldi: `src/chain/chain-den-graph.{h,cc}` (`CreateDenominatorFst`, `DenominatorGraph`'s initial
probabilities and `GetNormalizationFst`), `src/chainbin/chain-make-den-fst.cc`.

The denominator FST is the phone LM composed with the phonetic context (the tree's context
width and central position) and the HMMs of the transition model, with transition
probabilities, labelled with pdf-id + 1, epsilon-free and shrunk by three rounds of minimization
of the reversed and the forward graph (each after `PushSpecial`); its states are then numbered in
decreasing order of arcs in + out.  The normalization FST is the same graph with every state
initial (with the `DenominatorGraph` initial probabilities: the state occupation averaged over
100 steps of the HMM started in the start state) and every state final with weight One.

The steps are Kaldi's, with kaldifst and kaldi-hmm-gmm doing the FST algorithms
(`compose_context` = `ComposeContext`, `compose` = `TableCompose`, `get_h_transducer`,
`add_self_loops`, `rmepsilon`, `reverse`, `minimize_encoded` = `MinimizeAcceptorNoPush`'s
quantize/encode/`AcceptorMinimize`/decode), and `fstext.py` the pieces kaldifst lacks
(`RemoveEpsLocal`, `PushSpecial`, `StateSort`, `Project`, and the OpenFst 1.8 encoding of final
weights in `MinimizeEncoded`).  On the FSDD fixture both FSTs are Kaldi's: the same states, arcs
in the same order, bit-identical float weights; the files differ only in the header word where
OpenFst caches the properties it knows (tests/chain/test_den_graph.py).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from ..errors import UsageError
from .fstext import K_DELTA, Graph, minimize_encoded, project_input, push_special, remove_eps_local, state_sort

log = logging.getLogger(__name__)

OPENFST_MAGIC = (2125659606).to_bytes(4, "little")   # fst::kFstMagicNumber, the first 4 bytes of a binary FST


class DenGraphError(UsageError):
    """The tree, transition model and phone LM do not make a denominator graph (one line)."""


@dataclass(frozen=True)
class ChainModelParts:
    """What `chain-make-den-fst` reads besides the phone LM: the tree and the transition model
    (kaldi-hmm-gmm objects; `load_tree_and_transition_model` reads Kaldi's files)."""
    ctx_dep: khg.ContextDependency
    trans_model: khg.TransitionModel

    @property
    def num_pdfs(self) -> int:
        return self.trans_model.num_pdfs


def load_tree_and_transition_model(tree_path: str, trans_model_path: str) -> ChainModelParts:
    """Reads Kaldi's `tree` and a transition model (`0.trans_mdl`, or the start of a `.mdl`)."""
    from ..frontend.hmm import read_tree, to_khg
    from ..kaldi.transition import read_transition_model
    tree = read_tree(tree_path)
    tm = read_transition_model(trans_model_path)
    return ChainModelParts(tree, to_khg(tm, tree, source=trans_model_path))


def read_fst(path: str, what: str = "FST") -> kaldifst.StdVectorFst:
    """A binary OpenFst StdArc VectorFst (as Kaldi's ReadFstKaldi reads `phone_lm.fst`)."""
    with open(path, "rb") as f:   # OSError with the path if it is not there
        magic = f.read(4)
    if magic != OPENFST_MAGIC:   # (kaldifst would print its own error line first)
        raise DenGraphError(f"{path}: not a binary OpenFst {what} (no FST header)")
    fst = kaldifst.StdVectorFst.read(path)
    if fst is None:
        raise DenGraphError(f"{path}: not a binary OpenFst {what} (standard arcs, vector)")
    return fst


def write_fst(fst: kaldifst.StdVectorFst, path: str) -> None:
    """Binary OpenFst, as Kaldi's WriteFstKaldi writes it ("" is stdout)."""
    if path:
        open(path, "wb").close()   # OSError naming the path (kaldifst would only print to stderr)
    if not fst.write(path):
        raise OSError(f"cannot write {path}")


def _map_to_pdf_ids_plus_one(g: Graph, tid2pdf: np.ndarray) -> Graph:
    """`MapFstToPdfIdsPlusOne`: transition-id labels (acceptor) -> pdf-id + 1; 0 stays 0."""
    arcs = []
    for state_arcs in g.arcs:
        out = []
        for i, o, w, n in state_arcs:
            assert i == o
            label = int(tid2pdf[i]) + 1 if i > 0 else 0
            out.append((label, label, w, n))
        arcs.append(out)
    return Graph(g.start, list(g.finals), arcs)


def _minimize_acceptor_no_push(fst: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """`MinimizeAcceptorNoPush`: quantize with delta = 10 kDelta, encode labels and weights,
    AcceptorMinimize, decode (`fstext.minimize_encoded`)."""
    return minimize_encoded(fst, float(np.float32(K_DELTA * 10.0)))


def _push_special(fst: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    return push_special(Graph.from_fst(fst), K_DELTA * 0.01).to_fst()


def _den_graph_minimize(fst: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """`DenGraphMinimizeWrapper`: three passes of (reverse, push, minimize, reverse; push,
    minimize), then RmEpsilon (reversal adds an epsilon from the superinitial state) and a last
    PushSpecial."""
    for i in range(1, 4):
        reversed_fst = _minimize_acceptor_no_push(_push_special(kaldifst.reverse(fst)))
        fst = kaldifst.reverse(reversed_fst)
        log.debug("den graph: %d states, %d arcs after reversed minimization (pass %d)",
                  fst.num_states, _num_arcs(fst), i)
        fst = _minimize_acceptor_no_push(_push_special(fst))
        log.debug("den graph: %d states, %d arcs after regular minimization (pass %d)",
                  fst.num_states, _num_arcs(fst), i)
    kaldifst.rmepsilon(fst)
    return _push_special(fst)


def _num_arcs(fst) -> int:
    return sum(fst.num_arcs(s) for s in range(fst.num_states))


def _sort_on_transition_count(g: Graph) -> Graph:
    """`SortOnTransitionCount`: states by decreasing (arcs in + arcs out), ties by state id."""
    key = [0] * g.num_states
    for s, arcs in enumerate(g.arcs):
        for arc in arcs:
            key[s] -= 1
            key[arc[3]] -= 1
    ranked = sorted(range(g.num_states), key=lambda s: (key[s], s))
    order = [0] * g.num_states
    for new, s in enumerate(ranked):
        order[s] = new
    return state_sort(g, order)


def _check_phones(phone_lm: Graph, trans_model: khg.TransitionModel, what: str) -> None:
    phones = set(trans_model.phones)
    for arcs in phone_lm.arcs:
        for ilabel, olabel, _, _ in arcs:
            if ilabel != olabel:
                raise DenGraphError(f"{what}: not an acceptor (arc {ilabel}:{olabel})")
            if ilabel not in phones:
                raise DenGraphError(f"{what}: label {ilabel} is not a phone of the transition model "
                                    f"(phones {min(phones)}..{max(phones)})")


def hmm_level_fst(parts: ChainModelParts, phone_lm: kaldifst.StdVectorFst, what: str = "phone LM") -> Graph:
    """The first half of `chain::CreateDenominatorFst`: phone LM o context o HMMs (with
    transition probabilities and self-loops), as an acceptor of pdf-id + 1 labels, with the
    epsilons H leaves (one per phone, back to its loop state), not yet shrunk."""
    ctx_dep, trans_model = parts.ctx_dep, parts.trans_model
    lm = Graph.from_fst(phone_lm)
    if lm.num_states == 0:
        raise DenGraphError(f"{what}: the FST is empty")
    _check_phones(lm, trans_model, what)

    # context: Kaldi builds an InverseContextFst over the transition model's phones, adds the
    # subsequential loop to the LM (and projects) when there is right context, and composes with
    # ComposeDeterministicOnDemandInverse -- what ComposeContext does, with the phones of the LM
    # (all of them are phones of the model, checked above) and a subsequential symbol that the
    # final projection on the context side discards whatever its value.
    context_dep_lm, ilabel_info = kaldifst.compose_context(
        disambig_syms=[], context_width=ctx_dep.context_width,
        central_position=ctx_dep.central_position, ifst=lm.to_fst(), project_ifst=True)
    context_dep_lm = project_input(Graph.from_fst(context_dep_lm)).to_fst()

    h_fst, disambig_syms_h = khg.get_h_transducer(
        ilabel_info, ctx_dep, trans_model, khg.HTransducerConfig(transition_scale=1.0))
    assert not disambig_syms_h
    transition_id_fst = kaldifst.StdVectorFst(kaldifst.compose(h_fst, context_dep_lm))  # TableCompose
    # self-loops with scale 1 and reorder=true, as chain models need (the same at test time)
    transition_id_fst = khg.add_self_loops(self_loop_scale=1.0, disambig_syms=[], reorder=True,
                                           trans_model=trans_model, ifst=transition_id_fst)
    g = project_input(Graph.from_fst(transition_id_fst))
    g = _map_to_pdf_ids_plus_one(g, np.asarray(trans_model.transition_id_to_pdf_array()))
    log.debug("den graph: %d states, %d arcs in the transition-id FST", g.num_states, g.num_arcs)
    return g


def create_denominator_fst(parts: ChainModelParts, phone_lm: kaldifst.StdVectorFst,
                           what: str = "phone LM") -> kaldifst.StdVectorFst:
    """`chain::CreateDenominatorFst`: the pdf-id+1-labelled denominator FST (module docstring)."""
    fst = remove_eps_local(hmm_level_fst(parts, phone_lm, what))
    kaldifst.rmepsilon(fst)
    fst = _den_graph_minimize(fst)
    den = _sort_on_transition_count(Graph.from_fst(fst))

    seen = np.zeros(parts.num_pdfs, dtype=bool)
    for arcs in den.arcs:
        for ilabel, _, _, _ in arcs:
            pdf = ilabel - 1
            if not 0 <= pdf < parts.num_pdfs:
                raise AssertionError(f"den graph label {ilabel} outside 1..{parts.num_pdfs}")
            seen[pdf] = True
    for pdf in np.flatnonzero(~seen):
        log.warning("Pdf-id %d is not seen in denominator graph.", pdf)
    log.info("den graph: %d states and %d arcs", den.num_states, den.num_arcs)
    return den.to_fst()


def initial_probs(den_fst: kaldifst.StdVectorFst, num_iters: int = 100) -> np.ndarray:
    """`DenominatorGraph::SetInitialProbs` of a den.fst (`initial_probs_of_arcs`), float32 per state."""
    g = Graph.from_fst(den_fst)
    src = np.asarray([s for s, arcs in enumerate(g.arcs) for _ in arcs], dtype=np.int64)
    dst = np.asarray([a[3] for arcs in g.arcs for a in arcs], dtype=np.int64)
    prob = np.exp(-np.asarray([a[2] for arcs in g.arcs for a in arcs], dtype=np.float64))
    final = np.exp(-np.asarray(g.finals, dtype=np.float64))
    return initial_probs_of_arcs(g.num_states, g.start, src, dst, prob, final, num_iters).astype(np.float32)


def initial_probs_of_arcs(num_states: int, start: int, src: np.ndarray, dst: np.ndarray, prob: np.ndarray,
                          final_prob: np.ndarray, num_iters: int = 100) -> np.ndarray:
    """`DenominatorGraph::SetInitialProbs` in double for a graph given as arcs: each state's arcs
    and final-prob normalized to sum to one, the start state given probability 1, and the state
    distribution averaged over `num_iters` steps (renormalized after each, as final-probs leak).
    `prob` and `final_prob` are exp(-weight) (0 for a non-final state)."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    tot = np.asarray(final_prob, dtype=np.float64) + np.bincount(src, weights=prob, minlength=num_states)
    if np.any((tot <= 0.0) | (tot >= 100.0)):
        bad = int(np.flatnonzero((tot <= 0.0) | (tot >= 100.0))[0])
        raise DenGraphError(f"denominator graph state {bad}: its arcs and final-prob sum to {tot[bad]:g}, "
                            "not in (0, 100)")
    arc_scale = prob / tot[src]
    cur, avg = np.zeros(num_states), np.zeros(num_states)
    cur[start] = 1.0
    for _ in range(num_iters):
        avg += (1.0 / num_iters) * cur
        nxt = np.bincount(dst, weights=cur[src] * arc_scale, minlength=num_states)
        cur = nxt * (1.0 / nxt.sum())
    return avg


def normalization_fst(den_fst: kaldifst.StdVectorFst, probs: np.ndarray | None = None
                      ) -> kaldifst.StdVectorFst:
    """`DenominatorGraph::GetNormalizationFst`: a new start state with an epsilon arc of weight
    -log(initial prob) to every state, every state final with weight One, epsilons removed,
    arcs sorted on ilabel."""
    probs = initial_probs(den_fst) if probs is None else probs
    g = Graph.from_fst(den_fst)
    if len(probs) != g.num_states:
        raise DenGraphError(f"{len(probs)} initial probabilities for {g.num_states} states")
    new_start = g.add_state()
    for s, p in enumerate(probs):
        if not p > 0.0:
            raise DenGraphError(f"denominator FST: state {s} has initial probability {p} (unreachable?)")
        g.arcs[new_start].append((0, 0, float(np.float32(-math.log(float(p)))), s))
        g.finals[s] = 0.0
    g.start = new_start
    fst = g.to_fst()
    kaldifst.rmepsilon(fst)
    kaldifst.arcsort(fst, "ilabel")
    return fst


def make_den_fst(parts: ChainModelParts, phone_lm: kaldifst.StdVectorFst, what: str = "phone LM"
                 ) -> tuple[kaldifst.StdVectorFst, kaldifst.StdVectorFst]:
    """`chain-make-den-fst`: (den.fst, normalization.fst)."""
    den = create_denominator_fst(parts, phone_lm, what)
    return den, normalization_fst(den)


__all__ = ["ChainModelParts", "DenGraphError", "create_denominator_fst", "hmm_level_fst", "initial_probs",
           "load_tree_and_transition_model", "make_den_fst", "normalization_fst", "read_fst", "write_fst"]
