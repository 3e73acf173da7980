"""Data preparation shared by the digit corpora: Kaldi data dirs and the dict dir for lang prep.

Both corpora (the espeak-ng synthetic one and FSDD) say digit words, so one hand-written
lexicon with CMU phones (stress marks dropped: a digit grammar has no use for them) serves
both. Kaldi's conventions (docs/kaldi-formats.md 8.1): one record per line, keys sorted in C
order, utterance ids prefixed by their speaker id so utt2spk and spk2utt sort alike.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..atomic import write_lines
from ..kaldi.datadir import (
    SPK_FILES,
    UTT_FILES,
    DataDir,
    DataDirError,
    read_kaldi_map_lines,
    split_data,
    utt2spk_to_spk2utt,
    write_kaldi_map,
)
from ..options import KaldiArgumentParser

# CMU pronunciations of the digit words; "oh" is the spoken variant of zero in digit strings.
DIGIT_LEXICON = {
    "zero": "Z IH R OW",
    "one": "W AH N",
    "two": "T UW",
    "three": "TH R IY",
    "four": "F AO R",
    "five": "F AY V",
    "six": "S IH K S",
    "seven": "S EH V AH N",
    "eight": "EY T",
    "nine": "N AY N",
    "oh": "OW",
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE_PHONES = ("SIL", "SPN")          # SPN: spoken noise, the pronunciation of <unk>
OPTIONAL_SILENCE = "SIL"
OOV_WORD = "<unk>"


class DataPrepError(ValueError):
    """Bad corpus input; the message names the file and the utterance."""


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str
    wav: str            # rxfilename for wav.scp: an absolute path (or a `cmd |` pipe)
    words: tuple[str, ...]


def check_speaker_prefix(utt_id: str, speaker: str) -> None:
    if not utt_id.startswith(speaker):
        raise DataPrepError(f"utterance {utt_id!r} is not prefixed by its speaker id {speaker!r}")
    for name, what in ((utt_id, "utterance"), (speaker, "speaker")):
        if not name or any(c.isspace() for c in name):
            raise DataPrepError(f"{what} id {name!r} is empty or contains whitespace")


def write_data_dir(data_dir: str, utterances: Iterable[Utterance]) -> int:
    """Writes wav.scp, text, utt2spk and spk2utt (sorted in C order); returns the count."""
    utts = list(utterances)
    seen = set()
    for u in utts:
        check_speaker_prefix(u.utt_id, u.speaker)
        if u.utt_id in seen:
            raise DataPrepError(f"{data_dir}: duplicate utterance id {u.utt_id!r}")
        seen.add(u.utt_id)
    if not utts:
        raise DataPrepError(f"{data_dir}: no utterances to write")
    os.makedirs(data_dir, exist_ok=True)
    utt2spk = {u.utt_id: u.speaker for u in utts}
    write_kaldi_map(os.path.join(data_dir, "wav.scp"), {u.utt_id: u.wav for u in utts})
    write_kaldi_map(os.path.join(data_dir, "text"), {u.utt_id: u.words for u in utts})
    write_kaldi_map(os.path.join(data_dir, "utt2spk"), utt2spk)
    write_kaldi_map(os.path.join(data_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    return len(utts)


def read_text_words(text_path: str) -> set[str]:
    """All words of a Kaldi `text` file."""
    words = set()
    with open(text_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                raise DataPrepError(f"{text_path}:{n}: empty line")
            words.update(parts[1:])
    return words


def write_dict_dir(dict_dir: str, words: Iterable[str]) -> list[str]:
    """Writes the dict dir `utils/prepare_lang.sh` reads, for the given digit words plus
    `<unk>` (pronounced SPN). Returns the sorted word list."""
    words = sorted(set(words), key=str.encode)
    unknown = [w for w in words if w not in DIGIT_LEXICON]
    if unknown:
        raise DataPrepError(f"{dict_dir}: no pronunciation for word(s) {unknown} "
                            f"(the lexicon knows {sorted(DIGIT_LEXICON)})")
    if not words:
        raise DataPrepError(f"{dict_dir}: no words to write a lexicon for")
    entries = [f"{OOV_WORD} SPN"] + [f"{w} {DIGIT_LEXICON[w]}" for w in words]
    phones = sorted({p for w in words for p in DIGIT_LEXICON[w].split()}, key=str.encode)
    os.makedirs(dict_dir, exist_ok=True)
    write_lines(os.path.join(dict_dir, "lexicon.txt"), sorted(entries, key=str.encode))
    write_lines(os.path.join(dict_dir, "nonsilence_phones.txt"), phones)
    write_lines(os.path.join(dict_dir, "silence_phones.txt"), SILENCE_PHONES)
    write_lines(os.path.join(dict_dir, "optional_silence.txt"), [OPTIONAL_SILENCE])
    # One question over the silence phones and one over the rest, as Kaldi recipes without
    # stress marks write it.
    write_lines(os.path.join(dict_dir, "extra_questions.txt"), [" ".join(SILENCE_PHONES), " ".join(phones)])
    return words


# -- utils/fix_data_dir.sh ---------------------------------------------------------------------

def _first_occurrences(path: str, allow_empty_value: bool) -> tuple[dict[str, str], int]:
    """Lines of a map file keyed by their first field, duplicates dropped (and counted)."""
    out: dict[str, str] = {}
    dups = 0
    for line in read_kaldi_map_lines(path, allow_empty_value):
        if line.key in out:
            dups += 1
        else:
            out[line.key] = line.value
    return out, dups


def fix_data_dir(data_dir: str, utt_extra_files=(), spk_extra_files=()) -> list[str]:
    """`utils/fix_data_dir.sh`: keeps the utterances present in utt2spk and in every other
    per-utterance file (and whose speaker is in every per-speaker file), sorts every file,
    regenerates spk2utt. Originals are copied to `<data>/.backup/`. Returns report lines
    saying what was removed and why."""
    data = DataDir(data_dir)
    if not data.has("utt2spk"):
        raise DataDirError(f"{data.file('utt2spk')}: missing (every data directory needs it)")
    utt_files = [f for f in (*UTT_FILES, "segments", *utt_extra_files) if data.has(f)]
    if data.has("wav.scp") and not data.has("segments"):
        utt_files.append("wav.scp")
    spk_files = [f for f in (*SPK_FILES, *spk_extra_files) if data.has(f)]
    maps, report = {}, []
    for name in ("utt2spk", *utt_files, *spk_files):
        maps[name], dups = _first_occurrences(data.file(name), allow_empty_value=name == "text")
        if dups:
            report.append(f"{name}: dropped {dups} duplicate line(s)")
    utt2spk = maps["utt2spk"]
    bad_spk = [u for u, s in utt2spk.items() if len(s.split()) != 1]
    if bad_spk:
        raise DataDirError(f"{data.file('utt2spk')}: utterance {bad_spk[0]!r} does not have exactly one speaker")
    total = len(utt2spk)
    speakers = set(utt2spk.values())
    for name in spk_files:
        lost = speakers - set(maps[name])
        if lost:
            report.append(f"{name}: no entry for {len(lost)} speaker(s), e.g. {sorted(lost)[:3]}; "
                          f"their utterances are removed")
        speakers &= set(maps[name])
    utts = {u for u, s in utt2spk.items() if s in speakers}
    for name in utt_files:
        lost = utts - set(maps[name])
        if lost:
            report.append(f"{name}: no entry for {len(lost)} utterance(s), e.g. {sorted(lost)[:3]}")
        utts &= set(maps[name])
    if data.has("segments"):
        recordings = {v.split()[0] for u, v in maps["segments"].items() if u in utts}
    backup = os.path.join(data.path, ".backup")
    os.makedirs(backup, exist_ok=True)
    kept_utt2spk = {u: utt2spk[u] for u in utts}
    kept_speakers = set(kept_utt2spk.values())
    for name in dict.fromkeys(("utt2spk", *utt_files, *spk_files, "spk2utt", "wav.scp",
                               "reco2file_and_channel")):
        if data.has(name):
            shutil.copyfile(data.file(name), os.path.join(backup, name))
    write_kaldi_map(data.file("utt2spk"), kept_utt2spk)
    write_kaldi_map(data.file("spk2utt"), utt2spk_to_spk2utt(kept_utt2spk))
    for name in utt_files:
        write_kaldi_map(data.file(name), {u: v for u, v in maps[name].items() if u in utts})
    for name in spk_files:
        write_kaldi_map(data.file(name), {s: v for s, v in maps[name].items() if s in kept_speakers})
    if data.has("segments"):
        for name in ("wav.scp", "reco2file_and_channel"):
            if data.has(name):
                m, _ = _first_occurrences(data.file(name), False)
                write_kaldi_map(data.file(name), {r: v for r, v in m.items() if r in recordings})
    report.append(f"kept {len(utts)} utterances out of {total}")
    return report


def split_scp(scp: str, outputs: list[str]) -> None:
    """`utils/split_scp.pl <in> <out1> ... <outN>`: N contiguous parts, sizes differing by at
    most one line."""
    with open(scp, encoding="utf-8") as f:
        lines = f.read().splitlines()
    n = len(outputs)
    if n == 0 or len(lines) < n:
        raise DataDirError(f"{scp}: cannot split {len(lines)} line(s) into {n} part(s)")
    start = 0
    for j, out in enumerate(outputs):
        size = len(lines) // n + (1 if j < len(lines) % n else 0)
        write_lines(out, lines[start:start + size])
        start += size


# -- command line ------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = KaldiArgumentParser(prog="dataprep.py", description="Kaldi data-dir tools (the utils/*.sh stand-ins).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("prepare-dict", usage="prepare-dict <dict-dir> <text> [<text> ...]",
                       help="dict dir for utils/prepare_lang.sh from the words of Kaldi text files")
    d.add_argument("dict_dir")
    d.add_argument("texts", nargs="+")
    v = sub.add_parser("validate-data-dir", usage="validate_data_dir.sh [--no-feats] [--no-text] "
                       "[--no-wav] [--no-spk-sort] [--non-print] <data-dir>", help="utils/validate_data_dir.sh")
    for flag in ("--no-feats", "--no-text", "--no-wav", "--no-spk-sort"):
        v.add_argument(flag, action="store_true")
    v.add_argument("--non-print", action="store_true",
                   help="accepted for Kaldi compatibility; non-printable characters are not checked")
    v.add_argument("data_dir")
    f = sub.add_parser("fix-data-dir", usage="fix_data_dir.sh [--utt-extra-files 'a b'] "
                       "[--spk-extra-files 'c d'] <data-dir>", help="utils/fix_data_dir.sh")
    f.add_argument("--utt-extra-files", default="")
    f.add_argument("--spk-extra-files", default="")
    f.add_argument("data_dir")
    s = sub.add_parser("split-data", usage="split_data.sh <data-dir> <num-to-split>", help="utils/split_data.sh")
    s.add_argument("data_dir")
    s.add_argument("num_parts", type=int)
    c = sub.add_parser("split-scp", usage="split_scp.pl <in.scp> <out1> ... <outN>", help="utils/split_scp.pl")
    c.add_argument("scp")
    c.add_argument("outputs", nargs="+")
    u = sub.add_parser("utt2spk-to-spk2utt", usage="utt2spk_to_spk2utt.pl [<utt2spk>] > spk2utt",
                       help="utils/utt2spk_to_spk2utt.pl (reads stdin without a file)")
    u.add_argument("utt2spk", nargs="?", default="/dev/stdin")
    a = p.parse_args(argv)
    prog = a.command
    try:
        if prog == "prepare-dict":
            words = set()
            for t in a.texts:
                words |= read_text_words(t)
            write_dict_dir(a.dict_dir, words)
            print(f"{prog}: {len(words)} words in {a.dict_dir}/lexicon.txt", file=sys.stderr)
        elif prog == "validate-data-dir":
            DataDir(a.data_dir).validate(a.no_feats, a.no_text, a.no_wav, a.no_spk_sort)
            print(f"validate_data_dir.sh: Successfully validated data-directory {a.data_dir}", file=sys.stderr)
        elif prog == "fix-data-dir":
            for line in fix_data_dir(a.data_dir, a.utt_extra_files.split(), a.spk_extra_files.split()):
                print(f"fix_data_dir.sh: {a.data_dir}: {line}", file=sys.stderr)
        elif prog == "split-data":
            split_data(a.data_dir, a.num_parts)
        elif prog == "split-scp":
            split_scp(a.scp, a.outputs)
        else:
            utt2spk = {line.key: line.value for line in read_kaldi_map_lines(a.utt2spk)}
            for spk, utts in utt2spk_to_spk2utt(utt2spk).items():
                print(f"{spk} {' '.join(utts)}")
    except (DataPrepError, DataDirError, OSError) as e:
        print(f"{prog}: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
