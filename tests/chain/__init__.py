"""Tests of kaldi_avg.chain against Kaldi's own chain files for FSDD (see FIXTURE)."""
from __future__ import annotations

import os
import struct

import pytest

# Made by Kaldi's binaries (its README says how); found beside the checkout, or where
# $KALDI_CHAIN_FSDD points.
FIXTURE = os.environ.get("KALDI_CHAIN_FSDD", os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures", "kaldi-chain-fsdd"))


def fixture(name: str) -> str:
    path = os.path.join(FIXTURE, name)
    if not os.path.exists(path):
        pytest.skip(f"Kaldi's chain fixture {path} is not here (set KALDI_CHAIN_FSDD)")
    return path


def properties_offset(data: bytes) -> int:
    """Byte offset of the 64-bit properties field in a binary OpenFst header (magic, fst type,
    arc type, version, flags, properties, start, ...)."""
    pos = 4
    for _ in range(2):
        pos += 4 + struct.unpack_from("<i", data, pos)[0]
    return pos + 8


def same_file_but_properties(ours: bytes, kaldis: bytes) -> bool:
    """Byte-equal except the header's properties word: OpenFst caches there which properties are
    known, and that depends on the sequence of operations (ours builds the final FST afresh and
    knows more of them, e.g. kAcceptor, that Kaldi's in-place operations forgot)."""
    if len(ours) != len(kaldis):
        return False
    at = properties_offset(kaldis)
    return ours[:at] == kaldis[:at] and ours[at + 8:] == kaldis[at + 8:]
