"""Kaldi's `src/chain` (LF-MMI): phone LM, denominator/normalization FSTs (docs/chain.md)."""
