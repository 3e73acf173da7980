"""How an utterance is cut into training chunks: the semantics of Kaldi's `UtteranceSplitter`
(`src/nnet3/nnet-example-utils.cc`) as used by `nnet3-get-egs` for `train_rnn.py`.

For an utterance of T frames and chunk widths "w0,w1,..." (w0 the principal width):

* A *split* is a multiset of chunk widths: any number of w0 plus at most two alternatives.
  Every split is scored against T by its total duration d: d - T when the chunks overlap,
  2 (T - d) when they leave gaps (dropping frames is penalised twice as much as counting them
  twice), and infinity when its largest chunk is longer than T.  Splits within 1.9999 of the
  best score are equally likely.  Lengths beyond 2 max(w) + w0 first shed copies of w0.
* The chosen widths are sorted, and reversed half of the time.
* Gaps (d <= T) are spread as evenly as possible over the T - d frames before, between and
  after the chunks, in random positions.  Overlaps (d > T) only go between chunks, in
  proportion to the smaller neighbour; Kaldi truncates the fractional shares to integers
  before ranking them, so the leftover frames go to the earliest junctions.
* An output frame that n chunks share gets weight 1/n in each of them.
* The first chunk uses `left_context_initial` and the last `right_context_final` where those
  are >= 0; the others `left_context` / `right_context`.  Input frames outside the utterance
  repeat its first/last frame (done at collation).
* With i-vectors, each chunk takes the i-vector of one random frame of its input span.

With a frame-subsampling factor f > 1 (chain egs, `nnet3-chain-get-egs`; docs/chain.md 7) the
widths are rounded up to multiples of f, the gaps are spread over the ceil(T / f) output frames
and multiplied by f, and the weights are per output frame (every f-th input frame).

`split_utterance(..., rng=None)` makes every random choice deterministically (first split,
ascending order, larger gaps first, i-vector of the middle output frame), which the tests use
as hand-worked cases; with an `rng` it samples the same distribution as Kaldi (not the same
random numbers).  `--num-frames-overlap` is not used by Kaldi's training scripts and is left out.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import accumulate

from .seeding import make_rng

# splits scoring within this of the best are all candidates (just under 2, so ties are stable)
_COST_TOLERANCE = 1.9999


def parse_chunk_widths(text: str) -> tuple[int, ...]:
    """'40,30,20' -> (40, 30, 20); the first is the principal width."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"invalid chunk width {text!r}: expected comma-separated "
                         "integers") from None
    if not widths or min(widths) <= 0:
        raise ValueError(f"invalid chunk width {text!r}: widths must be positive")
    return widths


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk widths and the *total* input contexts of a chunk (model context included).

    `left_context_initial` / `right_context_final` < 0 mean "same as left/right_context";
    `frame_subsampling_factor` > 1: chain egs (the widths rounded up to multiples of it).
    """

    widths: tuple[int, ...]
    left_context: int
    right_context: int
    left_context_initial: int = -1
    right_context_final: int = -1
    frame_subsampling_factor: int = 1

    def __post_init__(self):
        if not self.widths or min(self.widths) <= 0:
            raise ValueError(f"chunk widths must be positive, got {self.widths}")
        if self.left_context < 0 or self.right_context < 0:
            raise ValueError("left/right context must be >= 0")
        f = self.frame_subsampling_factor
        if f < 1:
            raise ValueError(f"frame_subsampling_factor must be >= 1, got {f}")
        if f > 1:   # ExampleGenerationConfig::ComputeDerived rounds them up
            object.__setattr__(self, "widths", tuple(f * -(-w // f) for w in self.widths))

    @classmethod
    def from_egs_options(cls, chunk_width: str, *, model_left_context: int,
                         model_right_context: int, chunk_left_context: int = 40,
                         chunk_right_context: int = 0, chunk_left_context_initial: int = -1,
                         chunk_right_context_final: int = -1, frame_subsampling_factor: int = 1) -> ChunkConfig:
        """The contexts `train_rnn.py` (chain/train.py) passes to get_egs.sh from its `--egs.*` options."""
        if chunk_left_context < 0 or chunk_right_context < 0:
            raise ValueError("--egs.chunk-left-context and --egs.chunk-right-context must be >= 0")
        return cls(
            widths=parse_chunk_widths(chunk_width),
            left_context=chunk_left_context + model_left_context,
            right_context=chunk_right_context + model_right_context,
            left_context_initial=(chunk_left_context_initial + model_left_context
                                  if chunk_left_context_initial >= 0 else -1),
            right_context_final=(chunk_right_context_final + model_right_context
                                 if chunk_right_context_final >= 0 else -1),
            frame_subsampling_factor=frame_subsampling_factor,
        )

    @property
    def principal_width(self) -> int:
        return self.widths[0]

    @property
    def min_width(self) -> int:
        """Utterances shorter than this yield no chunk."""
        return min(self.widths)


@dataclass(frozen=True)
class Chunk:
    """One training example: output frames [first_frame, first_frame + width) of an utterance.

    Its input covers frames [first_frame - left_context, first_frame + width + right_context);
    `weights[k]` is the weight of output frame first_frame + k (< 1 where chunks overlap), or with
    frame subsampling by f of frame first_frame + k f (width / f weights).  `shift`: chain
    training's frame shift (nnet3-chain-copy-egs --frame-shift, `frame_shift_offset`): the
    network sees the same input frames with its time 0 at input frame first_frame - shift.
    """

    first_frame: int
    width: int
    left_context: int
    right_context: int
    weights: tuple[float, ...]
    ivector_frame: int
    shift: int = 0

    @property
    def input_start(self) -> int:
        return self.first_frame - self.left_context

    @property
    def input_length(self) -> int:
        return self.left_context + self.width + self.right_context

    def select_frame(self, k: int) -> Chunk:
        """Output frame k alone, with the chunk's contexts and i-vector frame (nnet3-copy-egs
        --frame=k on a frame-level eg)."""
        return Chunk(self.first_frame + k, 1, self.left_context, self.right_context, (self.weights[k],),
                     self.ivector_frame)

    def shifted(self, shift: int) -> Chunk:
        return replace(self, shift=shift)

    @property
    def structure(self) -> tuple[int, int, int]:
        """Chunks with equal structure have identical indexes and can share a minibatch:
        (the input frames before network time 0, output frames, the input frames after them)."""
        return (self.left_context - self.shift, self.width, self.right_context + self.shift)


def frame_shift_offset(frame_shift: int, frame_subsampling_factor: int) -> int:
    """What `ShiftChainExampleTimes` does to an eg, as one offset of the input against the
    output: it adds `frame_shift` to the input times and the nearest multiple of f to the output
    times (0, 1, 2 -> 0, +1, -1 for f = 3)."""
    f = frame_subsampling_factor
    return frame_shift - f * math.floor(0.5 + frame_shift / f)


def split_utterance(num_frames: int, config: ChunkConfig,
                    rng: random.Random | None = None) -> list[Chunk]:
    """The chunks `nnet3-get-egs` (`nnet3-chain-get-egs` with a subsampling factor) would cut
    from an utterance of `num_frames` frames (empty if it is shorter than every chunk width)."""
    if config.frame_subsampling_factor > 1:
        return _split_subsampled(num_frames, config, rng)
    sizes = chunk_sizes(num_frames, config.widths, rng)
    if not sizes:
        return []
    gaps = gap_sizes(num_frames, sizes, rng)
    starts = []
    t = 0
    for size, gap in zip(sizes, gaps):
        t += gap
        starts.append(t)
        t += size
    # chunks covering each frame, via a difference array
    steps = [0] * (num_frames + 1)
    for start, size in zip(starts, sizes):
        steps[start] += 1
        steps[start + size] -= 1
    share = [1.0 / count if count else 0.0 for count in accumulate(steps[:-1])]
    last = len(sizes) - 1
    chunks = []
    for i, (start, size) in enumerate(zip(starts, sizes)):
        left = (config.left_context_initial if i == 0 and config.left_context_initial >= 0
                else config.left_context)
        right = (config.right_context_final if i == last and config.right_context_final >= 0
                 else config.right_context)
        if rng is None:
            ivector_frame = start + size // 2
        else:
            ivector_frame = rng.randint(max(0, start - left),
                                        min(num_frames, start + size + right) - 1)
        weights = tuple(share[start:start + size])
        chunks.append(Chunk(start, size, left, right, weights, ivector_frame))
    return chunks


def _split_subsampled(num_frames: int, config: ChunkConfig, rng: random.Random | None) -> list[Chunk]:
    """`GetChunksForUtterance` with frame subsampling: gaps in whole output frames, each
    output frame weighted 1 / (number of chunks that contain it)."""
    f = config.frame_subsampling_factor
    sizes = chunk_sizes(num_frames, config.widths, rng)
    if not sizes:
        return []
    reduced = (num_frames + f - 1) // f
    gaps = [g * f for g in gap_sizes(reduced, [s // f for s in sizes], rng)]
    count = [0] * reduced
    starts = []
    t = 0
    for size, gap in zip(sizes, gaps):
        t += gap
        starts.append(t)
        for u in range(t // f, (t + size) // f):
            count[u] += 1
        t += size
    if t - num_frames >= f:
        raise AssertionError("chunks run past the utterance")
    chunks = []
    last = len(sizes) - 1
    for i, (start, size) in enumerate(zip(starts, sizes)):
        left = config.left_context_initial if i == 0 and config.left_context_initial >= 0 else config.left_context
        right = (config.right_context_final if i == last and config.right_context_final >= 0
                 else config.right_context)
        ivector_frame = (start + size // 2 if rng is None else
                         rng.randint(max(0, start - left), min(num_frames, start + size + right) - 1))
        weights = tuple(1.0 / count[u] for u in range(start // f, (start + size) // f))
        chunks.append(Chunk(start, size, left, right, weights, ivector_frame))
    return chunks


def chunks_for_utterance(utt: str, num_frames: int, config: ChunkConfig, srand: int) -> list[Chunk]:
    """The utterance's chunks, drawn once per (srand, utt) like egs dumped once and reused
    every epoch; identical on every rank and after a restart."""
    return split_utterance(num_frames, config, make_rng(srand, "split", utt))


def _split_cost(split: tuple[int, ...], num_frames: int) -> float:
    if num_frames < max(split):
        return math.inf
    duration = sum(split)
    return duration - num_frames if duration > num_frames else 2.0 * (num_frames - duration)


@lru_cache(maxsize=16)
def _splits_for_length(widths: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Candidate splits for every utterance length up to 2 max(widths) + widths[0].

    A pair of two different alternatives is listed in both orders (as Kaldi's set holds them
    before any principal width is added), which doubles its chance of being drawn.
    """
    primary = widths[0]
    longest = 2 * max(widths) + primary
    ceiling = longest + primary
    candidates: list[tuple[int, ...]] = []
    seen = set()
    for i in range(len(widths)):
        for j in range(len(widths)):
            split = [widths[k] for k in (i, j) if k > 0]
            while sum(split) <= ceiling:
                if split and tuple(split) not in seen:
                    seen.add(tuple(split))
                    candidates.append(tuple(split))
                split = sorted(split + [primary])
    candidates.sort()
    table = []
    for length in range(longest + 1):
        costs = [_split_cost(split, length) for split in candidates]
        best = min(costs)
        table.append(() if best == math.inf else
                     tuple(s for s, c in zip(candidates, costs) if c < best + _COST_TOLERANCE))
    return tuple(table)


def chunk_sizes(num_frames: int, widths: tuple[int, ...], rng: random.Random | None) -> list[int]:
    """The chunk widths of an utterance of `num_frames` frames, in order (empty if it is shorter
    than every width)."""
    table = _splits_for_length(widths)
    primary = widths[0]
    length, repeats = num_frames, 0
    while length >= len(table):
        length -= primary
        repeats += 1
    options = table[length]
    if not options:
        return []
    chosen = options[0] if rng is None else options[rng.randrange(len(options))]
    sizes = sorted(chosen + (primary,) * repeats)
    if rng is not None and rng.randrange(2) == 0:
        sizes.reverse()
    return sizes


def gap_sizes(num_frames: int, sizes: list[int], rng: random.Random | None) -> list[int]:
    """Offset of each chunk from the end of the previous one (negative = overlap)."""
    total_gap = num_frames - sum(sizes)
    if total_gap < 0:
        neighbours = [min(a, b) for a, b in zip(sizes, sizes[1:])]
        return [0] + [-overlap for overlap in _split_proportionally(-total_gap, neighbours)]
    # one more slot than chunks: the last one (after the final chunk) is implicit
    return _split_evenly(total_gap, len(sizes) + 1, rng)[:-1]


def _split_proportionally(total: int, magnitudes: list[int]) -> list[int]:
    """Integer shares of `total` proportional to `magnitudes`; leftovers to the first slots."""
    scale = sum(magnitudes)
    shares = [total * m // scale for m in magnitudes]
    for i in range(total - sum(shares)):
        shares[i] += 1
    return shares


def _split_evenly(total: int, slots: int, rng: random.Random | None) -> list[int]:
    base, extra = divmod(total, slots)
    shares = [base + 1] * extra + [base] * (slots - extra)
    if rng is not None:
        rng.shuffle(shares)
    return shares
