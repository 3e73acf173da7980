"""`lattice-align-phones` on CompactLattices (docs/chain.md 7.2), with the OpenFst algorithms it needs.

The CompactLattice itself (weights, semiring, text and binary archives) is kaldi_avg/kaldi/lattice.py.
Kaldi: `src/lat/phone-align-lattice.cc` (`LatticePhoneAligner`) and
`src/latbin/lattice-align-phones.cc`.

`phone_align_lattice` is `lattice-align-phones [--replace-output-symbols=true]`: the lattice is
walked from its start, the transition-ids of each path accumulated until a whole phone (its
final transition-id, then with `--reorder=true` the self-loops that follow it) has been seen and
the first transition-id of the next one too; each phone becomes one arc labelled with the phone
(or the first pending word) whose string is that phone's transition-ids. States are pairs
(lattice state, pending transition-ids and words), created in Kaldi's order (a LIFO queue), the
input's weights travel on epsilon arcs, and Kaldi's `RmEpsilon` (OpenFst's, step for step: its
state order, its epsilon-closure stack, the reversed arc order it writes, the merging of equal
(label, destination) arcs with `Plus`) and `Connect` remove them; a result that is not
topologically sorted is sorted as `TopSortCompactLatticeIfNeeded` does (depth-first finishing
order). Arc order and state structure are Kaldi's because the supervision built from the result
is not determinized: its states and arcs follow these.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..kaldi.lattice import ONE, Arc, CompactLattice, LatticeError, Weight, compare, plus, times
from ..kaldi.transition import TransitionModel


# -- OpenFst algorithms on CompactLattices ---------------------------------------------------------
def create_super_final(lat: CompactLattice) -> int:
    """`fst::CreateSuperFinal`: one final state with weight One and no arcs (kept if there is
    already exactly such a state); the old final weights move to epsilon arcs into it."""
    finals = [s for s in range(lat.num_states) if lat.finals[s] is not None]
    if len(finals) == 1 and lat.finals[finals[0]] == ONE and not lat.arcs[finals[0]]:
        return finals[0]
    f = lat.add_state()
    lat.finals[f] = ONE
    for s in finals:
        w = lat.finals[s]
        lat.finals[s] = None
        lat.add_arc(s, (0, w, f))
    return f


def _dfs(lat: CompactLattice, arc_ok, visit_init=None, visit_finish=None, back_or_cross=None) -> None:
    """OpenFst's `DfsVisit` over all states (the start's tree first, then every unvisited state in
    increasing order), following the arcs `arc_ok` accepts, in arc order."""
    n = lat.num_states
    color = [0] * n          # white, grey, black
    root = lat.start
    while root < n:
        color[root] = 1
        visit_init and visit_init(root, root)
        stack = [(root, 0)]
        while stack:
            s, i = stack[-1]
            arcs = lat.arcs[s]
            if i >= len(arcs):
                color[s] = 2
                stack.pop()
                if stack:
                    p, j = stack[-1]
                    visit_finish and visit_finish(s, p)
                    stack[-1] = (p, j + 1)
                else:
                    visit_finish and visit_finish(s, -1)
                continue
            arc = arcs[i]
            if not arc_ok(arc):
                stack[-1] = (s, i + 1)
                continue
            d = arc[2]
            if color[d] == 0:
                color[d] = 1
                visit_init and visit_init(d, root)
                stack.append((d, 0))
            else:
                back_or_cross and back_or_cross(s, d, color[d])
                stack[-1] = (s, i + 1)
        root = 0 if root == lat.start else root + 1
        while root < n and color[root] != 0:
            root += 1


def _scc_order(lat: CompactLattice, arc_ok) -> list[int]:
    """RmEpsilon's "generic topological order": `SccVisitor` numbers the SCCs (Tarjan, in
    finishing order, then reversed), states listed by SCC with larger states first within one."""
    n = lat.num_states
    dfnumber, lowlink = [-1] * n, [-1] * n
    onstack = [False] * n
    scc = [-1] * n
    stack: list[int] = []
    counter = [0, 0]     # states numbered, SCCs numbered

    def init(s, _root):
        stack.append(s)
        dfnumber[s] = lowlink[s] = counter[0]
        onstack[s] = True
        counter[0] += 1

    def finish(s, p):
        if dfnumber[s] == lowlink[s]:
            while True:
                t = stack.pop()
                scc[t] = counter[1]
                onstack[t] = False
                if t == s:
                    break
            counter[1] += 1
        if p >= 0 and lowlink[s] < lowlink[p]:
            lowlink[p] = lowlink[s]

    def other(s, d, col):
        if col == 1 or onstack[d]:
            if dfnumber[d] < lowlink[s]:
                lowlink[s] = dfnumber[d]

    _dfs(lat, arc_ok, init, finish, other)
    nscc = counter[1]
    scc = [nscc - 1 - c for c in scc]
    first: list[int] = [-1] * nscc
    nxt = [-1] * n
    for i in range(n):
        if first[scc[i]] != -1:
            nxt[i] = first[scc[i]]
        first[scc[i]] = i
    order = []
    for i in range(nscc):
        j = first[i]
        while j != -1:
            order.append(j)
            j = nxt[j]
    return order


def connect(lat: CompactLattice) -> None:
    """`fst::Connect`: states not on a path from the start to a final state are deleted (the others
    keep their relative order, arcs into deleted states go)."""
    n = lat.num_states
    if lat.start < 0 or n == 0:
        return
    access = [False] * n
    stack = [lat.start]
    access[lat.start] = True
    while stack:
        s = stack.pop()
        for _, _, d in lat.arcs[s]:
            if not access[d]:
                access[d] = True
                stack.append(d)
    rev: list[list[int]] = [[] for _ in range(n)]
    for s, arcs in enumerate(lat.arcs):
        for _, _, d in arcs:
            rev[d].append(s)
    coaccess = [lat.finals[s] is not None for s in range(n)]
    stack = [s for s in range(n) if coaccess[s]]
    while stack:
        d = stack.pop()
        for s in rev[d]:
            if not coaccess[s]:
                coaccess[s] = True
                stack.append(s)
    keep = [access[s] and coaccess[s] for s in range(n)]
    new = [-1] * n
    k = 0
    for s in range(n):
        if keep[s]:
            new[s] = k
            k += 1
    arcs = [[(lab, w, new[d]) for lab, w, d in lat.arcs[s] if keep[d]] for s in range(n) if keep[s]]
    finals = [lat.finals[s] for s in range(n) if keep[s]]
    lat.start = new[lat.start] if keep[lat.start] else -1
    lat.arcs, lat.finals = (arcs, finals) if lat.start >= 0 else ([], [])


def rm_epsilon(lat: CompactLattice) -> None:
    """OpenFst's `RmEpsilon(fst, connect=true)` on a CompactLattice (module docstring)."""
    n = lat.num_states
    if lat.start < 0:
        return
    noneps_in = [False] * n
    noneps_in[lat.start] = True
    for arcs in lat.arcs:
        for label, _, d in arcs:
            if label != 0:
                noneps_in[d] = True
    if lat.top_sorted_known:
        states = list(range(n))
    else:
        states = _scc_order(lat, lambda a: a[0] == 0)
    while states:
        source = states.pop()
        if not noneps_in[source]:
            continue
        dist = _epsilon_distances(lat, source)
        new_arcs: list[Arc] = []
        index: dict[tuple[int, int], int] = {}
        final: Weight | None = None
        visited = set()
        eps_stack = [source]
        while eps_stack:
            s = eps_stack.pop()
            if s in visited:
                continue
            visited.add(s)
            for label, w, d in lat.arcs[s]:
                w = times(dist[s], w)
                if label == 0:
                    if d not in visited:
                        eps_stack.append(d)
                elif (label, d) in index:
                    i = index[(label, d)]
                    new_arcs[i] = (label, plus(new_arcs[i][1], w), d)
                else:
                    index[(label, d)] = len(new_arcs)
                    new_arcs.append((label, w, d))
            final = plus(final, times(dist[s], lat.finals[s]))
        lat.finals[source] = final
        lat.arcs[source] = new_arcs[::-1]
    for s in range(n):
        if not noneps_in[s]:
            lat.arcs[s] = []
    connect(lat)
    lat.top_sorted_known = False


def _epsilon_distances(lat: CompactLattice, source: int) -> dict[int, Weight]:
    """Shortest distances from `source` over epsilon arcs (a path semiring: the best path's
    weight, whatever the queue order)."""
    dist: dict[int, Weight] = {source: ONE}
    queue = [source]
    while queue:
        s = queue.pop()
        for label, w, d in lat.arcs[s]:
            if label != 0:
                continue
            nd = times(dist[s], w)
            if d not in dist or compare(nd, dist[d]) > 0:
                dist[d] = nd
                queue.append(d)
    return dist


def top_sort_if_needed(lat: CompactLattice) -> None:
    """`TopSortCompactLatticeIfNeeded`: if some arc goes to a lower-numbered state, renumber
    the states in reverse depth-first finishing order (`TopSort`); arcs keep their order."""
    if lat.is_top_sorted():
        lat.top_sorted_known = True
        return
    finish: list[int] = []
    acyclic = [True]

    def back(_s, _d, col):
        if col == 1:
            acyclic[0] = False
    _dfs(lat, lambda a: True, None, lambda s, p: finish.append(s), back)
    if not acyclic[0]:
        raise LatticeError("Topological sorting failed (the lattice has a cycle)")
    order = [0] * lat.num_states
    for i, s in enumerate(reversed(finish)):
        order[s] = i
    arcs: list[list[Arc]] = [[] for _ in range(lat.num_states)]
    finals: list[Weight | None] = [None] * lat.num_states
    for s in range(lat.num_states):
        arcs[order[s]] = [(lab, w, order[d]) for lab, w, d in lat.arcs[s]]
        finals[order[s]] = lat.finals[s]
    lat.start = order[lat.start]
    lat.arcs, lat.finals = arcs, finals
    lat.top_sorted_known = True


# -- lattice-align-phones ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PhoneAlignOptions:
    """`PhoneAlignLatticeOptions` (lattice-align-phones' options)."""
    reorder: bool = True
    remove_epsilon: bool = True
    replace_output_symbols: bool = False


class _TransitionInfo:
    def __init__(self, tm: TransitionModel):
        self.phone = tm.transition_id_phones().tolist()
        self.final = tm.final_mask().tolist()
        self.self_loop = tm.self_loop_mask().tolist()
        self.num_tids = tm.num_transition_ids

    def check(self, tids: tuple[int, ...]) -> None:
        for t in tids:
            if not 1 <= t <= self.num_tids:
                raise LatticeError(f"transition-id {t} is outside the model's 1..{self.num_tids}")


class _PhoneAligner:
    """`LatticePhoneAligner`: tuples (input state, pending transition-ids, pending words)."""

    def __init__(self, lat: CompactLattice, info: _TransitionInfo, opts: PhoneAlignOptions):
        self.lat = lat.copy()
        create_super_final(self.lat)
        self.info, self.opts = info, opts
        self.out = CompactLattice()
        self.map: dict[tuple, int] = {}
        self.queue: list[tuple[tuple, int]] = []
        self.error = False

    def state_for(self, tup: tuple) -> int:
        s = self.map.get(tup)
        if s is None:
            s = self.out.add_state()
            self.map[tup] = s
            self.queue.append((tup, s))
        return s

    def output_phone_arc(self, tids: tuple[int, ...], words: tuple[int, ...]):
        """(arc label, arc tids, remaining tids, remaining words) or None."""
        if not tids:
            return None
        info = self.info
        phone = info.phone[tids[0]]
        n = len(tids)
        i = 0
        while i < n:
            if info.phone[tids[i]] != phone and not self.error:
                self.error = True
            if info.final[tids[i]]:
                break
            i += 1
        if i == n:
            return None
        i += 1
        if self.opts.reorder:
            while i < n and info.self_loop[tids[i]]:
                i += 1
        if i == n:
            return None
        label = words[0] if words else 0
        words = words[1:] if words else words
        if self.opts.replace_output_symbols:
            label = phone
        return label, tids[:i], tids[i:], words

    def output_arc_force(self, tids: tuple[int, ...], words: tuple[int, ...]):
        phone = -1
        if tids:
            phone = self.info.phone[tids[0]]
            num_final = sum(1 for t in tids if self.info.final[t])
            if any(self.info.phone[t] != phone for t in tids) or num_final != 1:
                self.error = True
        label = words[0] if words else 0
        words = words[1:] if words else words
        if self.opts.replace_output_symbols:
            label = phone
        return label, tids, (), words

    def process(self) -> None:
        tup, out_state = self.queue.pop()
        in_state, tids, words = tup
        got = self.output_phone_arc(tids, words)
        if got is None and len(words) >= 2:        # OutputWordArc
            got = (words[0], (), tids, words[1:])
        if got is not None:
            label, arc_tids, tids, words = got
            nxt = self.state_for((in_state, tids, words))
            self.out.add_arc(out_state, (label, (0.0, 0.0, arc_tids), nxt))
            return
        if self.lat.finals[in_state] is not None:    # One, after CreateSuperFinal
            if not tids and not words:
                self.out.finals[out_state] = plus(self.out.finals[out_state], ONE)
            else:
                label, arc_tids, tids2, words2 = self.output_arc_force(tids, words)
                nxt = self.state_for((in_state, tids2, words2))
                self.out.add_arc(out_state, (label, (0.0, 0.0, arc_tids), nxt))
        for label, w, d in self.lat.arcs[in_state]:
            self.info.check(w[2])
            new_words = words + (label,) if label != 0 and not self.opts.replace_output_symbols else words
            nxt = self.state_for((d, tids + w[2], new_words))
            self.out.add_arc(out_state, (0, (w[0], w[1], ()), nxt))

    def run(self) -> tuple[CompactLattice, bool]:
        if self.lat.start < 0:
            return self.out, False
        self.out.start = self.state_for((self.lat.start, (), ()))
        while self.queue:
            self.process()
        if self.opts.remove_epsilon:
            rm_epsilon(self.out)
        return self.out, not self.error


def phone_align_lattice(lat: CompactLattice, trans_model: TransitionModel,
                        opts: PhoneAlignOptions = PhoneAlignOptions(replace_output_symbols=True)
                        ) -> tuple[CompactLattice, bool]:
    """`PhoneAlignLattice` + what `lattice-align-phones` does before writing
    (`TopSortCompactLatticeIfNeeded`): (the phone-aligned lattice, ok). Not ok: the alignment
    hit a broken phone (Kaldi still writes the partial lattice, as `--output-error-lats=true`)."""
    aligned, ok = _PhoneAligner(lat, _TransitionInfo(trans_model), opts).run()
    if aligned.start >= 0:
        top_sort_if_needed(aligned)
    return aligned, ok


__all__ = ["PhoneAlignOptions", "connect", "create_super_final", "phone_align_lattice", "rm_epsilon",
           "top_sort_if_needed"]
