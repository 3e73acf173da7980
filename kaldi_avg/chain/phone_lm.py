"""The phone language model of `chain-est-phone-lm` (docs/chain.md 1).

Kaldi: `src/chain/language-model.{h,cc}` (`LanguageModelOptions`, `LanguageModelEstimator`),
`src/chainbin/chain-est-phone-lm.cc`.  An un-smoothed n-gram model over phone sequences with a
"hard" backoff: a history state whose count is too small is removed altogether (its counts are
added to the state of its history minus the leftmost phone), so the FST has no backoff arcs and
no probability for unseen n-grams.  The output is an epsilon-free deterministic acceptor
(OpenFst StdArc VectorFst), state for state and arc for arc the one Kaldi writes: the states are
numbered in the order the histories were first seen, the arcs go out in phone order, the
weights are the same float32 values (-log count/total, computed in double as Kaldi does), and
the pruning reproduces Kaldi's priority queue, its float32 likelihood changes and its
`ApproxEqual` staleness test, ties included.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import kaldifst
import numpy as np

from ..errors import UsageError

F32 = np.float32


class PhoneLmError(UsageError):
    """Bad options or phone sequences for the phone LM (one line)."""


@dataclass(frozen=True)
class LanguageModelOptions:
    """`chain::LanguageModelOptions` (defaults as Kaldi's)."""
    ngram_order: int = 4            # --ngram-order
    num_extra_lm_states: int = 1000  # --num-extra-lm-states
    no_prune_ngram_order: int = 3   # --no-prune-ngram-order: histories shorter than this are kept

    def __post_init__(self):
        # Kaldi asserts these (LanguageModelEstimator's constructor and AddCounts)
        if self.ngram_order < 2:
            raise PhoneLmError(f"--ngram-order must be >= 2, got {self.ngram_order}")
        if self.no_prune_ngram_order < 1:
            raise PhoneLmError(f"--no-prune-ngram-order must be >= 1, got {self.no_prune_ngram_order}")
        if self.ngram_order < self.no_prune_ngram_order:
            raise PhoneLmError(f"--ngram-order ({self.ngram_order}) must be >= --no-prune-ngram-order "
                               f"({self.no_prune_ngram_order})")


class _LmState:
    """`LanguageModelEstimator::LmState`."""
    __slots__ = ("history", "phone_to_count", "tot_count", "tot_count_with_parents",
                 "backoff_lmstate_index", "fst_state", "backoff_allowed")

    def __init__(self, history: tuple[int, ...]):
        self.history = history
        self.phone_to_count: dict[int, int] = {}
        self.tot_count = 0
        self.tot_count_with_parents = 0
        self.backoff_lmstate_index = -1
        self.fst_state = -1
        self.backoff_allowed = False

    def add_count(self, phone: int, count: int) -> None:
        self.phone_to_count[phone] = self.phone_to_count.get(phone, 0) + count
        self.tot_count += count

    def add(self, other: _LmState) -> None:
        for phone, count in other.phone_to_count.items():
            self.add_count(phone, count)

    def clear(self) -> None:
        self.phone_to_count = {}
        self.tot_count = 0
        self.tot_count_with_parents = 0
        self.backoff_allowed = False

    def log_like(self) -> np.float32:
        """Sum over phones of count * log(count / total), in double, returned as float (BaseFloat)."""
        ans = 0.0
        for _, count in sorted(self.phone_to_count.items()):
            ans += math.log(count * 1.0 / self.tot_count) * count
        return F32(ans)


def _approx_equal(a: np.float32, b: np.float32, relative_tolerance: float = 0.001) -> bool:
    """Kaldi's `ApproxEqual(float, float)` (src/base/kaldi-math.h), in float32."""
    if a == b:
        return True
    diff = abs(F32(a) - F32(b))
    if math.isinf(diff) or math.isnan(diff):
        return False
    return bool(diff <= F32(relative_tolerance) * (abs(F32(a)) + abs(F32(b))))


def _trunc_div(a: int, b: int) -> int:
    """C++ integer division (rounds towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class LanguageModelEstimator:
    """`chain::LanguageModelEstimator`: `add_counts` per phone sequence, then `estimate`."""

    def __init__(self, opts: LanguageModelOptions | None = None):
        self.opts = opts or LanguageModelOptions()
        self._index: dict[tuple[int, ...], int] = {}   # history -> lm-state index
        self._states: list[_LmState] = []
        self._num_active = 0          # states with nonzero count
        self._num_basic = 0           # states with history length no_prune_ngram_order - 1
        self._queue: list[tuple[float, int]] = []   # max-heap of (like-change, index) as negatives
        self._tot_count = 0           # phone instances (+ end of sentence) seen, for the log
        self._tot_logprob = 0.0

    # ---- counting (AddCounts, IncrementCount, FindOrCreateLmStateIndexForHistory)
    def add_counts(self, sentence: Iterable[int]) -> None:
        """Counts every n-gram of one phone sequence; history starts as [0] (BOS), and 0 after
        the last phone is the end of sentence (the final probability)."""
        order = self.opts.ngram_order
        history = [0]
        for phone in sentence:
            phone = int(phone)
            if phone <= 0:
                raise PhoneLmError(f"phone sequences must hold positive phone ids, got {phone}")
            self._increment_count(tuple(history), phone)
            history.append(phone)
            if len(history) >= order:
                del history[0]
        self._increment_count(tuple(history), 0)

    def _increment_count(self, history: tuple[int, ...], next_phone: int) -> None:
        state = self._states[self._find_or_create(history)]
        if state.tot_count == 0:
            self._num_active += 1
        state.add_count(next_phone, 1)

    def _find_or_create(self, hist: tuple[int, ...]) -> int:
        index = self._index.get(hist)
        if index is not None:
            return index
        index = len(self._states)
        self._states.append(_LmState(hist))
        self._index[hist] = index
        if len(hist) >= self.opts.no_prune_ngram_order:
            self._states[index].backoff_lmstate_index = self._find_or_create(hist[1:])
        return index

    def _find_nonzero(self, hist: tuple[int, ...]) -> int:
        """The most specific existing state with nonzero count for `hist` or its backed-off
        (leftmost phones dropped) versions."""
        while True:
            index = self._index.get(hist, -1)
            if index != -1 and self._states[index].tot_count != 0:
                return index
            if not hist:
                raise AssertionError("no LM state for a history (Kaldi: 'likely code bug')")
            hist = hist[1:]

    # ---- pruning
    def _set_parent_counts(self) -> None:
        for index, state in enumerate(self._states):
            count = state.tot_count
            while index != -1:
                self._states[index].tot_count_with_parents += count
                index = self._states[index].backoff_lmstate_index

    def _check_active_states(self) -> int:
        active = sum(1 for s in self._states if s.tot_count != 0)
        assert active == self._num_active
        return sum(1 for s in self._states if len(s.history) == self.opts.no_prune_ngram_order - 1)

    def _backoff_allowed(self, index: int) -> bool:
        state = self._states[index]
        if len(state.history) < self.opts.no_prune_ngram_order:
            return False
        if state.tot_count != state.tot_count_with_parents or state.tot_count == 0:
            return False
        if len(state.history) == self.opts.ngram_order - 1:
            return True
        for phone in sorted(state.phone_to_count):
            if phone != 0:
                nxt = self._index.get(state.history + (phone,), -1)
                if nxt != -1 and self._states[nxt].tot_count_with_parents != 0:
                    return False   # this transition needs all the context the state has
        return True

    def _backoff_like_change(self, index: int) -> np.float32:
        state = self._states[index]
        backoff = self._states[state.backoff_lmstate_index]
        if backoff.tot_count == 0:
            return F32(-1.0e-15 * state.tot_count)   # back off the lowest counts first
        summed = _LmState(backoff.history)
        summed.add(backoff)
        summed.add(state)
        change = summed.log_like() - state.log_like() - backoff.log_like()
        assert change < 0.1, change
        return F32(0.0) if change > 0.0 else change

    def _push(self, like_change: np.float32, index: int) -> None:
        # std::priority_queue<pair<float, int>> pops the largest (like-change, index)
        heapq.heappush(self._queue, (-float(like_change), -index))

    def _initialize_queue(self) -> None:
        self._queue = []
        for index, state in enumerate(self._states):
            state.backoff_allowed = self._backoff_allowed(index)
            if state.backoff_allowed:
                self._push(self._backoff_like_change(index), index)

    def _back_off_state(self, index: int) -> None:
        state = self._states[index]
        backoff_index = state.backoff_lmstate_index
        backoff = self._states[backoff_index]
        had_backoff_allowed = backoff.backoff_allowed
        if backoff.tot_count != 0:
            self._num_active -= 1
        backoff.add(state)
        state.clear()
        backoff.backoff_allowed = self._backoff_allowed(backoff_index)
        if not had_backoff_allowed and backoff.backoff_allowed:
            self._push(self._backoff_like_change(backoff_index), backoff_index)

    def _do_backoff(self) -> None:
        initial = self._num_active
        target = self._num_basic + self.opts.num_extra_lm_states
        num_targets = 4
        targets = [initial + _trunc_div((target - initial) * (t + 1), num_targets) for t in range(num_targets)]
        for this_target in targets:
            self._initialize_queue()
            while self._num_active > this_target and self._queue:
                neg_change, neg_index = heapq.heappop(self._queue)
                like_change, index = F32(-neg_change), -neg_index
                recomputed = self._backoff_like_change(index)
                if not _approx_equal(like_change, recomputed):
                    self._push(recomputed, index)   # stale: requeue, change nothing
                else:
                    self._back_off_state(index)
        self.pruned_from, self.target_num_states = initial, target

    # ---- output
    def estimate(self) -> kaldifst.StdVectorFst:
        """Prunes to (number of histories of length no_prune_ngram_order - 1) +
        num_extra_lm_states states and returns the LM as an acceptor."""
        if not self._states:
            raise PhoneLmError("no phone sequences were given")
        self._set_parent_counts()
        self._num_basic = self._check_active_states()
        self._do_backoff()
        self._check_active_states()
        num_fst_states = 0
        for state in self._states:
            if state.tot_count != 0:
                state.fst_state = num_fst_states
                num_fst_states += 1
        return self._output_to_fst(num_fst_states)

    def _output_to_fst(self, num_states: int) -> kaldifst.StdVectorFst:
        fst = kaldifst.StdVectorFst()
        for _ in range(num_states):
            fst.add_state()
        fst.start = self._states[self._find_nonzero((0,))].fst_state
        tot_count, tot_logprob = 0, 0.0
        for state in self._states:
            if state.fst_state == -1:
                continue
            for phone, count in sorted(state.phone_to_count.items()):
                logprob = F32(math.log(count * 1.0 / state.tot_count))   # BaseFloat
                tot_count += count
                tot_logprob += float(logprob) * count
                weight = kaldifst.TropicalWeight(float(-logprob))
                if phone == 0:
                    fst.set_final(state.fst_state, weight)
                else:
                    dest = self._states[self._find_nonzero(state.history + (phone,))].fst_state
                    assert dest != -1
                    fst.add_arc(state.fst_state, kaldifst.StdArc(phone, phone, weight, dest))
        self._tot_count, self._tot_logprob = tot_count, tot_logprob
        kaldifst.connect(fst)
        assert fst.num_states == num_states, "Connect removed states of the phone LM"
        kaldifst.arcsort(fst, "ilabel")
        return fst

    @property
    def perplexity(self) -> float:
        """On the training data, as `chain-est-phone-lm` logs it (valid after `estimate`)."""
        return math.exp(-(self._tot_logprob / self._tot_count))


def estimate_phone_lm(sequences: Iterable[Sequence[int]],
                      opts: LanguageModelOptions | None = None) -> kaldifst.StdVectorFst:
    """`chain-est-phone-lm`: the phone LM of these phone sequences (ali-to-phones output)."""
    estimator = LanguageModelEstimator(opts)
    for seq in sequences:
        estimator.add_counts(seq)
    return estimator.estimate()
