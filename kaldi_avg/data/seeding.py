"""Deterministic random streams named by their purpose, so every choice can be replayed.

A chunk plan, an archive split or a shuffle order is a pure function of (srand, names), the
same on every rank and after a restart, independent of the order things are computed in.
"""
from __future__ import annotations

import hashlib
import random


def make_rng(*parts: int | str) -> random.Random:
    """A `random.Random` seeded from the parts (ints and strings; Python's hash() is salted)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))
