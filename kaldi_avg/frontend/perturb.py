"""Speed perturbation of a data directory, as utils/data/perturb_data_dir_speed_3way.sh does it.

Kaldi's recipes train their neural networks on three copies of the data: the original and
copies played at 0.9 and 1.1 times the speed (sox's `speed` effect changes tempo and pitch
together, roughly what a different vocal tract length does). The copies are new wav.scp
entries that pipe through sox, so nothing is written to disk until features are computed:
`sp0.9-<utt> sox -R -t wav <file> -t wav - speed 0.9 |`. Unlike Kaldi's script we pass sox
-R (repeatable mode): otherwise sox dithers with a fresh random seed on every read, and two
feature extractions of one wav.scp (the alignment's and the network's) would differ. Utterance and speaker ids get the
`sp<factor>-` prefix; utt2uniq maps every copy to its source utterance so that the trainer
keeps the copies of a held-out utterance out of training.
"""
from __future__ import annotations

import os
import re
import shutil
import sys

from ..kaldi.datadir import DataDir, DataDirError, utt2spk_to_spk2utt, write_kaldi_map
from ..options import KaldiArgumentParser

THREE_WAY_FACTORS = (0.9, 1.1)  # plus the unperturbed original
_OFFSET_RX = re.compile(r":[0-9]+$")


class PerturbError(ValueError):
    """The data directory cannot be speed-perturbed; the message names the file and utterance."""


def sox_speed_rxfilename(rxfilename: str, factor: float, utt: str) -> str:
    """The wav.scp entry that plays `rxfilename` at `factor` times the speed."""
    rx = rxfilename.strip()
    effect = f"-t wav - speed {factor:g} |"
    if rx.endswith("|"):
        return f"{rx[:-1].rstrip()} | sox -R -t wav - {effect}"
    if _OFFSET_RX.search(rx):
        # Kaldi pipes an ark offset through wav-copy, a Kaldi binary that this front end lacks.
        raise PerturbError(f"wav.scp entry of utterance {utt} is an archive offset ({rx}); "
                           "only files and `cmd |` pipes can be speed-perturbed here")
    return f"sox -R -t wav {rx} {effect}"


def speed_prefix(factor: float) -> str:
    return f"sp{factor:g}-"


def perturb_speed_3way(src: str, dest: str, include_spk_prefix: bool = True) -> int:
    """Writes `dest` with the original utterances and their 0.9x and 1.1x copies (wav.scp,
    utt2spk, spk2utt, text, utt2uniq and utt2dur when `src` has it). Returns the count."""
    if shutil.which("sox") is None:
        raise PerturbError("sox: command not found (Debian: apt-get install sox); "
                           "speed perturbation pipes every wav through it")
    if os.path.abspath(src) == os.path.abspath(dest):
        raise PerturbError(f"{src}: source and destination must differ")
    if os.path.isfile(os.path.join(dest, "feats.scp")):
        raise PerturbError(f"{dest}/feats.scp already exists: refusing to overwrite features "
                           "(delete it to perturb again)")
    data = DataDir(src)
    wavs = data.wav_scp
    if wavs is None:
        raise PerturbError(f"{data.file('wav.scp')}: missing")
    if data.has("segments"):
        raise PerturbError(f"{data.file('segments')}: segmented data directories are not supported")
    text, utt2dur = data.text, data.utt2dur
    source_uniq = data.utt2uniq or {}
    missing = [u for u in data.utts if u not in wavs]
    if missing:
        raise PerturbError(f"{data.file('wav.scp')}: no entry for utterance {missing[0]} "
                           f"({len(missing)} utterances missing)")
    utt2spk, wav_scp, new_text, utt2uniq, new_dur = {}, {}, {}, {}, {}
    for factor in (1.0, *THREE_WAY_FACTORS):
        utt_prefix = speed_prefix(factor) if factor != 1.0 else ""
        spk_prefix = utt_prefix if include_spk_prefix else ""
        for utt, spk in data.utt2spk.items():
            new = utt_prefix + utt
            utt2spk[new] = spk_prefix + spk
            wav_scp[new] = wavs[utt] if factor == 1.0 else sox_speed_rxfilename(wavs[utt], factor, utt)
            utt2uniq[new] = source_uniq.get(utt, utt)
            if text is not None and utt in text:
                new_text[new] = text[utt]
            if utt2dur is not None and utt in utt2dur:
                new_dur[new] = f"{utt2dur[utt] / factor:g}"
    os.makedirs(dest, exist_ok=True)
    write_kaldi_map(os.path.join(dest, "wav.scp"), wav_scp)
    write_kaldi_map(os.path.join(dest, "utt2spk"), utt2spk)
    write_kaldi_map(os.path.join(dest, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kaldi_map(os.path.join(dest, "utt2uniq"), utt2uniq)
    if new_text:
        write_kaldi_map(os.path.join(dest, "text"), new_text)
    if new_dur:
        write_kaldi_map(os.path.join(dest, "utt2dur"), new_dur)
    return len(utt2spk)


def main(argv=None) -> int:
    p = KaldiArgumentParser(prog="perturb_data_dir_speed_3way.sh",
                            usage="perturb_data_dir_speed_3way.sh [--include-spk-prefix true|false] "
                                  "<srcdir> <destdir>",
                            description="3-way speed perturbation (factors 0.9, 1.0, 1.1) of a data dir")
    p.add_argument("--include-spk-prefix", default="true", choices=("true", "false"))
    p.add_argument("srcdir")
    p.add_argument("destdir")
    a = p.parse_args(argv)
    try:
        n = perturb_speed_3way(a.srcdir, a.destdir, a.include_spk_prefix == "true")
        DataDir(a.destdir).validate(no_feats=True)
    except (PerturbError, DataDirError, OSError) as e:
        print(f"perturb_data_dir_speed_3way.sh: ERROR: {e}", file=sys.stderr)
        return 1
    print(f"perturb_data_dir_speed_3way.sh: generated 3-way speed-perturbed version of data in "
          f"{a.srcdir}, in {a.destdir} ({n} utterances)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
