"""Which utterances each training job reads: Kaldi's egs archives, without dumping them.

`steps/nnet3/get_egs.sh` holds out validation utterances, picks a train subset for
diagnostics, and spreads the training chunks over

    A = num_frames // (principal_chunk_width * samples_per_iter) + 1

archives; iteration i's job j (1-based in Kaldi) trains on archive
((archives_processed + j - 1) mod A) + 1.  Here an archive is a set of whole utterances,
balanced by frames (so each utterance is read once per pass), A is capped at the number of
training utterances, and every index is 0-based: job j (0 <= j < num_jobs, i.e. the rank)
reads archive (archives_processed + j) mod A, which is Kaldi's archive number minus one for
Kaldi's job j + 1.

Held-out sets: Kaldi takes `num_utts_subset` (300) random validation utterances (all
speed-perturbed copies of one source utterance together, via utt2uniq) and refuses corpora
with fewer than 4x that many.  Here the validation set is also capped at `max_heldout_fraction`
of the corpus (at least one utterance when there are two or more) so tiny corpora still
train; the train subset (not removed from training) is `num_utts_subset` random
non-validation utterances.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .seeding import make_rng


def num_archives(num_frames: int, principal_chunk_width: int, samples_per_iter: int) -> int:
    """get_egs.sh's archive count (its "+ 1 rounds up", so an exact multiple gets one more)."""
    if principal_chunk_width <= 0 or samples_per_iter <= 0:
        raise ValueError("chunk width and samples_per_iter must be positive")
    return num_frames // (principal_chunk_width * samples_per_iter) + 1


def archive_for_job(job: int, archives_processed: int, num_archives: int) -> int:
    """0-based archive of 0-based `job` when `archives_processed` archives were used before
    this iteration (Kaldi's train_new_models: archive = ((processed + job) mod A) + 1, 1-based)."""
    if num_archives <= 0 or job < 0 or archives_processed < 0:
        raise ValueError(f"invalid job {job} / archives_processed {archives_processed} / "
                         f"num_archives {num_archives}")
    return (archives_processed + job) % num_archives


def select_heldout(utts: Sequence[str], *, srand: int = 0, num_utts_subset: int = 300,
                   max_heldout_fraction: float = 0.1,
                   utt2uniq: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(validation utterances, train-subset utterances), both sorted."""
    groups: dict[str, list[str]] = {}
    for utt in sorted(utts):
        groups.setdefault(utt2uniq.get(utt, utt) if utt2uniq else utt, []).append(utt)
    group_ids = sorted(groups)
    make_rng(srand, "valid").shuffle(group_ids)
    num_valid = min(num_utts_subset, int(max_heldout_fraction * len(group_ids)))
    if num_valid == 0 and len(group_ids) >= 2 and num_utts_subset > 0:
        num_valid = 1
    valid = sorted(utt for gid in group_ids[:num_valid] for utt in groups[gid])
    held = set(valid)
    rest = [utt for utt in sorted(utts) if utt not in held]
    make_rng(srand, "train_subset").shuffle(rest)
    return valid, sorted(rest[:num_utts_subset])


@dataclass(frozen=True)
class ArchivePlan:
    """Archives of training utterances plus the held-out and diagnostic subsets."""

    archives: tuple[tuple[str, ...], ...]
    valid_utts: tuple[str, ...]
    train_subset_utts: tuple[str, ...]
    num_frames: int  # frames of all utterances given to plan_archives (get_egs.sh's num_frames)

    @property
    def num_archives(self) -> int:
        return len(self.archives)

    def to_dict(self) -> dict:
        return {"archives": [list(a) for a in self.archives], "valid_utts": list(self.valid_utts),
                "train_subset_utts": list(self.train_subset_utts), "num_frames": self.num_frames}

    @classmethod
    def from_dict(cls, state: dict) -> ArchivePlan:
        return cls(tuple(tuple(a) for a in state["archives"]), tuple(state["valid_utts"]),
                   tuple(state["train_subset_utts"]), int(state["num_frames"]))


def plan_archives(utt_lengths: Mapping[str, int], *, samples_per_iter: int,
                  principal_chunk_width: int, srand: int = 0, num_utts_subset: int = 300,
                  max_heldout_fraction: float = 0.1,
                  utt2uniq: Mapping[str, str] | None = None) -> ArchivePlan:
    """Split the corpus (usable utterances with their frame counts) into held-out sets and
    frame-balanced training archives; deterministic in (utterances, lengths, srand)."""
    valid, train_subset = select_heldout(list(utt_lengths), srand=srand,
                                         num_utts_subset=num_utts_subset,
                                         max_heldout_fraction=max_heldout_fraction,
                                         utt2uniq=utt2uniq)
    held = set(valid)
    train = [utt for utt in sorted(utt_lengths) if utt not in held]
    if not train:
        raise ValueError("no training utterances left after holding out the validation set")
    total_frames = sum(int(n) for n in utt_lengths.values())
    count = min(num_archives(total_frames, principal_chunk_width, samples_per_iter), len(train))
    return ArchivePlan(_balance(train, utt_lengths, count, srand), tuple(valid),
                       tuple(train_subset), total_frames)


def _balance(utts: list[str], lengths: Mapping[str, int], count: int,
             srand: int) -> tuple[tuple[str, ...], ...]:
    """Longest-first greedy assignment to the archive with the fewest frames (ties broken
    by a seeded shuffle, so equal-length utterances spread differently per srand)."""
    order = list(utts)
    make_rng(srand, "archives").shuffle(order)
    order.sort(key=lambda utt: -lengths[utt])  # stable: keeps the shuffled order among ties
    heap = [(0, index) for index in range(count)]
    members: list[list[str]] = [[] for _ in range(count)]
    for utt in order:
        frames, index = heapq.heappop(heap)
        members[index].append(utt)
        heapq.heappush(heap, (frames + lengths[utt], index))
    return tuple(tuple(m) for m in members)
