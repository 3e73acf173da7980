"""Grouping chunks into minibatches like `nnet3-merge-egs --minibatch-size=...`.

Rule syntax (`ExampleMergingConfig` in `src/nnet3/nnet-example-utils.h`):

* "128"            every minibatch has 128 chunks;
* "128,64"         128 while input lasts; at the end of input, 64 if at least 64 are left;
* "1:64"           ranges: 64 while input lasts, then any size from 1 to 64 at the end;
* "64=32/256=16"   per example size (input frames of a chunk): the rule whose size is
                   closest to the chunk's applies.

Only chunks with the same structure (contexts and width) are merged.  A group is written out
as soon as it reaches the largest allowed size; at the end each group is flushed with the
largest allowed size not above what is left, and chunks no allowed size fits are discarded
(and reported by the caller).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _SizeSet:
    """e.g. "16:32,64" -> ranges ((16, 32), (64, 64))."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def largest(self) -> int:
        return max(high for _, high in self.ranges)

    def largest_at_most(self, limit: int) -> int:
        """Largest allowed size <= limit, or 0."""
        return max((min(high, limit) for low, high in self.ranges if limit >= low), default=0)


@dataclass(frozen=True)
class MinibatchSizeRule:
    """A parsed `--minibatch-size` string; eg_size is 0 where the rule names none."""

    rules: tuple[tuple[int, _SizeSet], ...]

    @classmethod
    def parse(cls, text: str) -> MinibatchSizeRule:
        def fail(why: str):
            raise ValueError(f"invalid --minibatch-size={text!r}: {why}")

        parts = text.split("/")
        rules = []
        for part in parts:
            if "=" in part:
                eg_size_text, _, sizes_text = part.partition("=")
                if not eg_size_text.strip().isdigit() or int(eg_size_text) <= 0:
                    fail(f"example size {eg_size_text!r} is not a positive integer")
                eg_size = int(eg_size_text)
            elif len(parts) > 1:
                fail("every rule needs an example size ('size=...') when there are several")
            else:
                eg_size, sizes_text = 0, part
            ranges = []
            for item in sizes_text.split(","):
                bounds = item.split(":")
                if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
                    fail(f"{item!r} is not an integer or a range low:high")
                low, high = int(bounds[0]), int(bounds[-1])
                if low <= 0 or low > high:
                    fail(f"{item!r} is not a positive, increasing range")
                ranges.append((low, high))
            rules.append((eg_size, _SizeSet(tuple(ranges))))
        eg_sizes = [size for size, _ in rules]
        if len(set(eg_sizes)) != len(eg_sizes):
            fail("repeated example sizes")
        return cls(tuple(rules))

    def size_for(self, eg_size: int, num_available: int, input_ended: bool) -> int:
        """How many of `num_available` equal chunks of `eg_size` input frames to merge now
        (0 = wait for more, or, once the input has ended, discard them)."""
        _, sizes = min(self.rules, key=lambda rule: abs(eg_size - rule[0]))
        if not input_ended:
            return sizes.largest if sizes.largest <= num_available else 0
        return sizes.largest_at_most(num_available)


def halve_minibatch_size(text: str) -> str:
    """train_rnn.py's iteration-0 minibatch size: every size halved (at least 1),
    e.g. "128,64" -> "64,32", "256=64:128" -> "256=32:64"."""
    MinibatchSizeRule.parse(text)

    def halve(sizes: str) -> str:
        return ",".join(":".join(str(max(1, int(b) // 2)) for b in item.split(":"))
                        for item in sizes.split(","))

    return "/".join(f"{rule.partition('=')[0]}={halve(rule.partition('=')[2])}" if "=" in rule
                    else halve(rule) for rule in text.split("/"))


def merge_into_minibatches(items: Iterable[T], rule: MinibatchSizeRule,
                           structure: Callable[[T], Hashable],
                           eg_size: Callable[[T], int]) -> tuple[list[list[T]], list[T]]:
    """Minibatches in the order `nnet3-merge-egs` writes them, and the discarded items.

    Leftover groups are flushed in the order their structure first appeared."""
    pending: dict[Hashable, list[T]] = {}
    minibatches: list[list[T]] = []
    for item in items:
        group = pending.setdefault(structure(item), [])
        group.append(item)
        if rule.size_for(eg_size(item), len(group), input_ended=False):
            minibatches.append(group[:])
            group.clear()
    discarded: list[T] = []
    for group in pending.values():
        while group:
            size = rule.size_for(eg_size(group[0]), len(group), input_ended=True)
            if size == 0:
                discarded.extend(group)
                break
            minibatches.append(group[:size])
            del group[:size]
    return minibatches, discarded
