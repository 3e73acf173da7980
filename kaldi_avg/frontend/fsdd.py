"""Free Spoken Digit Dataset (FSDD) data preparation.

The recordings are `{digit}_{speaker}_{index}.wav` (8 kHz, one digit each). Speaker lucas is
held out for test; every other speaker (george, jackson, nicolas, theo, yweweler) trains. Utterance ids are
`<speaker>-<digit>-<index:02d>`, so they are prefixed by the speaker and sort by it.

    python -m kaldi_avg.frontend.fsdd [--test-speakers=lucas] <fsdd-dir> <data-dir>

`<fsdd-dir>` is the corpus root (with `recordings/`) or the recordings folder itself; writes
`<data-dir>/train` and `<data-dir>/test`. Files whose names do not fit the pattern are
skipped, counted and reported.
"""
from __future__ import annotations

import os
import re
import sys

from ..options import KaldiArgumentParser
from .dataprep import DIGIT_WORDS, DataPrepError, Utterance, write_data_dir

TEST_SPEAKERS = ("lucas",)
_NAME = re.compile(r"^([0-9])_([A-Za-z0-9]+)_([0-9]+)\.wav$")


def find_recordings(fsdd_dir: str) -> str:
    for d in (os.path.join(fsdd_dir, "recordings"), fsdd_dir):
        if os.path.isdir(d) and any(n.endswith(".wav") for n in os.listdir(d)):
            return os.path.abspath(d)
    raise DataPrepError(f"{fsdd_dir}: no FSDD recordings (expected {fsdd_dir}/recordings/*.wav)")


def scan_fsdd(fsdd_dir: str) -> tuple[list[Utterance], list[str]]:
    """All recordings as utterances, plus the names that were skipped."""
    rec_dir = find_recordings(fsdd_dir)
    utts, skipped = [], []
    for name in sorted(os.listdir(rec_dir)):
        m = _NAME.match(name)
        if not m:
            skipped.append(name)
            continue
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        utts.append(Utterance(f"{speaker}-{digit}-{index:02d}", speaker,
                              os.path.join(rec_dir, name), (DIGIT_WORDS[digit],)))
    return utts, skipped


def prepare_fsdd(fsdd_dir: str, data_dir: str, test_speakers=TEST_SPEAKERS) -> dict[str, int]:
    """Writes `<data_dir>/train` and `<data_dir>/test`; returns counts per split and skipped."""
    utts, skipped = scan_fsdd(fsdd_dir)
    if not utts:
        raise DataPrepError(f"{fsdd_dir}: no file matches {{digit}}_{{speaker}}_{{index}}.wav")
    speakers = {u.speaker for u in utts}
    missing = sorted(set(test_speakers) - speakers)
    if missing:
        raise DataPrepError(f"{fsdd_dir}: test speaker(s) {missing} have no recordings "
                            f"(speakers found: {sorted(speakers)})")
    counts = {}
    for split, keep in (("train", lambda s: s not in test_speakers), ("test", lambda s: s in test_speakers)):
        counts[split] = write_data_dir(os.path.join(data_dir, split), (u for u in utts if keep(u.speaker)))
    counts["skipped"] = len(skipped)
    return counts


def main(argv=None) -> int:
    p = KaldiArgumentParser(prog="fsdd.py", description="Kaldi data dirs for the Free Spoken Digit Dataset.",
                            usage="python -m kaldi_avg.frontend.fsdd [options] <fsdd-dir> <data-dir>")
    p.add_argument("--test-speakers", default=",".join(TEST_SPEAKERS),
                   help="comma-separated speakers held out for data/test")
    p.add_argument("fsdd_dir")
    p.add_argument("data_dir")
    a = p.parse_args(argv)
    try:
        counts = prepare_fsdd(a.fsdd_dir, a.data_dir, tuple(s for s in a.test_speakers.split(",") if s))
    except (DataPrepError, OSError) as e:
        print(f"fsdd.py: {e}", file=sys.stderr)
        return 1
    print(f"fsdd.py: {counts['train']} train and {counts['test']} test utterances in {a.data_dir}"
          + (f"; skipped {counts['skipped']} files not named digit_speaker_index.wav"
             if counts["skipped"] else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
