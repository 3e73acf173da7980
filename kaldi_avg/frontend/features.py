"""`compute-mfcc-feats` and `compute-cmvn-stats` without Kaldi, on kaldi-native-fbank (knf).

Options come from a Kaldi config file (`--config=conf/mfcc.conf`) and the command line, the
command line winning, exactly as Kaldi's ParseOptions reads them. Every MFCC option Kaldi
registers maps to a knf field (docs/dependencies.md 2); the few knf lacks (VTLN warping, resampling,
`--max-feature-vectors`) are accepted only at their Kaldi default and are otherwise errors.
Two knf defaults differ from Kaldi's and are fixed here: dither is 1.0 (knf: 3e-5), and
samples are fed at int16 scale. Dither noise comes from libc's rand(), which knf (like
Kaldi) draws from; it is re-seeded from each utterance id, so features are reproducible and
do not depend on how the data is split into jobs (Kaldi seeds once per process instead).

    python -m kaldi_avg.frontend.features compute-mfcc-feats [options] <wav-rspecifier> <feats-wspecifier>
    python -m kaldi_avg.frontend.features compute-cmvn-stats [--spk2utt=ark:spk2utt] <feats-rspecifier> \
        <stats-wspecifier>
    python -m kaldi_avg.frontend.features frame-shift <mfcc-config>

compute-mfcc-feats also takes copy-feats' `--compress` and `--write-num-frames`, so one
command does what `compute-mfcc-feats | copy-feats` does in steps/make_mfcc.sh.
"""
from __future__ import annotations

import argparse
import ctypes
import io
import subprocess
import sys
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np

from ..atomic import write_lines
from ..kaldi.binary import KaldiFormatError
from ..kaldi.cmvn import compute_cmvn_stats
from ..kaldi.datadir import read_kaldi_map
from ..kaldi.tables import MatrixTable, parse_specifier, read_matrix_table, read_script, write_matrix_table
from ..options import KaldiArgumentParser, kaldi_bool


class FeatureConfigError(ValueError):
    """A config file or option is invalid; the message names the file and the option."""


class WavError(ValueError):
    """A wav file cannot be read or does not fit the options; names the file and utterance."""


def _window_type(text: str) -> str:
    if text not in ("hamming", "hanning", "povey", "rectangular", "sine", "blackman"):
        raise ValueError(f"invalid window type {text!r}")
    return text


@dataclass(frozen=True)
class _Option:
    parse: object              # str -> value
    default: object            # Kaldi's default
    knf: tuple[str, ...] | None  # attribute path in knf.MfccOptions; None = handled here


# Every option compute-mfcc-feats registers, with Kaldi's defaults.
MFCC_OPTIONS: dict[str, _Option] = {
    # FrameExtractionOptions
    "sample-frequency": _Option(float, 16000.0, ("frame_opts", "samp_freq")),
    "frame-shift": _Option(float, 10.0, ("frame_opts", "frame_shift_ms")),
    "frame-length": _Option(float, 25.0, ("frame_opts", "frame_length_ms")),
    "dither": _Option(float, 1.0, ("frame_opts", "dither")),
    "preemphasis-coefficient": _Option(float, 0.97, ("frame_opts", "preemph_coeff")),
    "remove-dc-offset": _Option(kaldi_bool, True, ("frame_opts", "remove_dc_offset")),
    "window-type": _Option(_window_type, "povey", ("frame_opts", "window_type")),
    "blackman-coeff": _Option(float, 0.42, ("frame_opts", "blackman_coeff")),
    "round-to-power-of-two": _Option(kaldi_bool, True, ("frame_opts", "round_to_power_of_two")),
    "snip-edges": _Option(kaldi_bool, True, ("frame_opts", "snip_edges")),
    "allow-downsample": _Option(kaldi_bool, False, None),
    "allow-upsample": _Option(kaldi_bool, False, None),
    "max-feature-vectors": _Option(int, -1, None),
    # MelBanksOptions
    "num-mel-bins": _Option(int, 23, ("mel_opts", "num_bins")),
    "low-freq": _Option(float, 20.0, ("mel_opts", "low_freq")),
    "high-freq": _Option(float, 0.0, ("mel_opts", "high_freq")),
    "vtln-low": _Option(float, 100.0, ("mel_opts", "vtln_low")),
    "vtln-high": _Option(float, -500.0, ("mel_opts", "vtln_high")),
    "debug-mel": _Option(kaldi_bool, False, ("mel_opts", "debug_mel")),
    # MfccOptions
    "num-ceps": _Option(int, 13, ("num_ceps",)),
    "use-energy": _Option(kaldi_bool, True, ("use_energy",)),
    "energy-floor": _Option(float, 0.0, ("energy_floor",)),
    "raw-energy": _Option(kaldi_bool, True, ("raw_energy",)),
    "cepstral-lifter": _Option(float, 22.0, ("cepstral_lifter",)),
    "htk-compat": _Option(kaldi_bool, False, ("htk_compat",)),
    # compute-mfcc-feats' own options
    "vtln-warp": _Option(float, 1.0, None),
    "subtract-mean": _Option(kaldi_bool, False, None),
    "channel": _Option(int, -1, None),
    "min-duration": _Option(float, 0.0, None),
    "output-format": _Option(str, "kaldi", None),
    "utt2spk": _Option(str, "", None),
    "vtln-map": _Option(str, "", None),
    "write-utt2dur": _Option(str, "", None),
    # copy-feats' options, for the `compute-mfcc-feats | copy-feats` of make_mfcc.sh
    "compress": _Option(kaldi_bool, False, None),
    "write-num-frames": _Option(str, "", None),
}

# Options knf cannot honour; only Kaldi's default value is accepted.
_UNSUPPORTED = {
    "allow-downsample": "kaldi-native-fbank does not resample",
    "allow-upsample": "kaldi-native-fbank does not resample",
    "max-feature-vectors": "kaldi-native-fbank has no frame limit",
    "vtln-warp": "kaldi-native-fbank has no VTLN warping",
    "vtln-map": "kaldi-native-fbank has no VTLN warping",
    "utt2spk": "it only serves --vtln-map, and VTLN is not available",
    "output-format": "only the kaldi output format is written",
}


def read_config_file(path: str) -> list[tuple[str, str | None, int]]:
    """(name, value or None, line) of a Kaldi config file: `#` starts a comment, blank lines
    are skipped, every other line is `--name=value` or `--name`; `_` in names counts as `-`."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise FeatureConfigError(f"cannot read config file {path}: {e.strerror}") from None
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("--") or len(line) == 2:
            raise FeatureConfigError(f"{path}:{n}: invalid option line {raw.strip()!r} (expected --name=value)")
        name, eq, value = line[2:].partition("=")
        out.append((name.strip().replace("_", "-"), value.strip() if eq else None, n))
    return out


def _parse_value(name: str, value: str | None, where: str):
    opt = MFCC_OPTIONS.get(name)
    if opt is None:
        raise FeatureConfigError(f"{where}: unknown option --{name}")
    if value is None:
        if opt.parse is not kaldi_bool:
            raise FeatureConfigError(f"{where}: option --{name} needs a value")
        return True
    try:
        return opt.parse(value)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise FeatureConfigError(f"{where}: bad value for --{name}: {e}") from None


def resolve_options(config: str | None = None, overrides: dict[str, object] | None = None) -> dict[str, object]:
    """Kaldi defaults, then the config file, then `overrides` (already parsed values)."""
    values = {name: opt.default for name, opt in MFCC_OPTIONS.items()}
    if config:
        for name, value, n in read_config_file(config):
            values[name] = _parse_value(name, value, f"{config}:{n}")
    values.update(overrides or {})
    for name, why in _UNSUPPORTED.items():
        if values[name] != MFCC_OPTIONS[name].default:
            where = "command line" if name in (overrides or {}) else config
            raise FeatureConfigError(f"{where}: --{name}={values[name]} is not supported ({why})")
    return values


def knf_mfcc_options(values: dict[str, object]):
    """knf.MfccOptions with every mapped option set explicitly (so knf's own defaults, e.g.
    its dither of 3e-5, never leak in)."""
    o = knf.MfccOptions()
    for name, opt in MFCC_OPTIONS.items():
        if opt.knf is not None:
            target = o
            for attr in opt.knf[:-1]:
                target = getattr(target, attr)
            setattr(target, opt.knf[-1], values[name])
    return o


# The process's C library: knf's dither draws from its rand(), seeded here per utterance.
_LIBC = ctypes.CDLL(None)


def utterance_seed(utt: str) -> int:
    """The srand() seed of an utterance's dither noise."""
    return zlib.crc32(utt.encode("utf-8"))


class MfccComputer:
    """compute-mfcc-feats for one utterance at a time."""

    def __init__(self, values: dict[str, object], source: str = "options"):
        self.values = values
        self.options = knf_mfcc_options(values)
        try:                      # knf validates the mel/cepstral options when it is built
            knf.OnlineMfcc(self.options)
        except ValueError as e:
            raise FeatureConfigError(f"{source}: {e}") from None

    @property
    def sample_frequency(self) -> float:
        return float(self.values["sample-frequency"])

    def compute(self, utt: str, samples: np.ndarray, samp_freq: float, source: str) -> np.ndarray:
        """Features (frames x dim, float32) of int16-scale mono `samples`."""
        if samp_freq != self.sample_frequency:
            raise WavError(f"{source} (utterance {utt}): sample rate {samp_freq:g} Hz differs from "
                           f"--sample-frequency={self.sample_frequency:g} (resampling is not available)")
        if self.values["dither"] != 0.0:
            _LIBC.srand(utterance_seed(utt))
        mfcc = knf.OnlineMfcc(self.options)
        mfcc.accept_waveform(self.sample_frequency, np.ascontiguousarray(samples, dtype=np.float32))
        mfcc.input_finished()
        n = mfcc.num_frames_ready
        feats = np.empty((n, mfcc.dim), dtype=np.float32)
        for i in range(n):
            feats[i] = mfcc.get_frame(i)
        if self.values["subtract-mean"] and n:
            feats -= feats.mean(axis=0, dtype=np.float32)
        return feats


def read_wav(rxfilename: str, utt: str) -> tuple[np.ndarray, float]:
    """(samples: channels x n, int16 scale as float32; sample rate) from a file or `cmd |`.
    Kaldi's wave reader takes 16-bit PCM only, and so does this one."""
    where = f"{rxfilename} (utterance {utt})"
    try:
        if rxfilename.rstrip().endswith("|"):
            proc = subprocess.run(rxfilename.rstrip()[:-1], shell=True,   # /bin/sh, as Kaldi's popen
                                  capture_output=True)
            if proc.returncode != 0:
                raise WavError(f"{where}: command exited with status {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
            stream = io.BytesIO(proc.stdout)
        else:
            stream = open(rxfilename, "rb")
        with stream, wave.open(stream, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise WavError(f"{where}: cannot read wav: {e}") from None
    if width != 2:
        raise WavError(f"{where}: {8 * width}-bit samples; only 16-bit PCM is supported (as in Kaldi)")
    if not data:
        raise WavError(f"{where}: empty wav (no data)")
    samples = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype="<i2")
    return samples.reshape(-1, channels).T.astype(np.float32), float(rate)


def _text_table_path(wspecifier: str, option: str) -> str:
    spec = parse_specifier(wspecifier, for_writing=True)
    if spec.scp is not None or spec.ark is None or spec.ark.endswith("|") or spec.ark == "-":
        raise FeatureConfigError(f"--{option}={wspecifier}: expected a text archive such as ark,t:<file>")
    return spec.ark


@dataclass
class MfccReport:
    done: int = 0
    too_short: int = 0
    missing_channel: int = 0

    def line(self) -> str:
        skipped = self.too_short + self.missing_channel
        text = f"Done {self.done} out of {self.done + skipped} utterances"
        if skipped:
            text += (f"; skipped {self.too_short} too short (no frames or under --min-duration) and "
                     f"{self.missing_channel} without the requested --channel")
        return text


def compute_mfcc_feats(values: dict[str, object], wav_rspecifier: str, feats_wspecifier: str,
                       source: str = "options") -> MfccReport:
    """The body of compute-mfcc-feats (+ copy-feats --compress/--write-num-frames)."""
    from tqdm import tqdm

    computer = MfccComputer(values, source)
    spec = parse_specifier(wav_rspecifier)
    if spec.scp is None:
        raise FeatureConfigError(f"{wav_rspecifier}: wav input must be an scp (scp:wav.scp)")
    entries = read_script(spec.scp)
    dur_path = (_text_table_path(str(values["write-utt2dur"]), "write-utt2dur")
                if values["write-utt2dur"] else None)
    frames_path = (_text_table_path(str(values["write-num-frames"]), "write-num-frames")
                   if values["write-num-frames"] else None)
    report = MfccReport()
    durations, frames = [], []
    min_duration, channel = float(values["min-duration"]), int(values["channel"])

    def features() -> Iterator[tuple[str, np.ndarray]]:
        for utt, rx in tqdm(entries, desc="compute-mfcc-feats", unit="utt", disable=None):
            samples, rate = read_wav(rx, utt)
            duration = samples.shape[1] / rate
            if duration < min_duration:
                print(f"WARNING: {rx} (utterance {utt}) is too short ({duration:.3f} s < "
                      f"--min-duration): no output", file=sys.stderr)
                report.too_short += 1
                continue
            if channel >= samples.shape[0]:
                print(f"WARNING: {rx} (utterance {utt}) has {samples.shape[0]} channel(s), "
                      f"--channel={channel}: no output", file=sys.stderr)
                report.missing_channel += 1
                continue
            if channel == -1 and samples.shape[0] > 1:
                print(f"WARNING: {rx} (utterance {utt}) has {samples.shape[0]} channels and no "
                      f"--channel; using channel 0", file=sys.stderr)
            feats = computer.compute(utt, samples[max(channel, 0)], rate, rx)
            if feats.shape[0] == 0:
                print(f"WARNING: {rx} (utterance {utt}) is shorter than one frame "
                      f"({duration:.3f} s): no output", file=sys.stderr)
                report.too_short += 1
                continue
            durations.append(f"{utt} {duration:.7g}")
            frames.append(f"{utt} {feats.shape[0]}")
            report.done += 1
            yield utt, feats

    write_matrix_table(feats_wspecifier, features(), compress=bool(values["compress"]))
    if dur_path:
        write_lines(dur_path, durations)
    if frames_path:
        write_lines(frames_path, frames)
    return report


def read_spk2utt(rspecifier: str) -> dict[str, list[str]]:
    spec = parse_specifier(rspecifier)
    if spec.ark is None:
        raise FeatureConfigError(f"--spk2utt={rspecifier}: expected ark:<file>")
    return {spk: utts.split() for spk, utts in read_kaldi_map(spec.ark).items()}


@dataclass
class CmvnReport:
    done: int = 0
    missing_utts: int = 0
    empty_speakers: int = 0

    def line(self, per: str) -> str:
        return (f"Done accumulating CMVN stats for {self.done} {per}s; {self.missing_utts} "
                f"utterance(s) without features and {self.empty_speakers} speaker(s) with no "
                f"stats were skipped")


def compute_cmvn_stats_table(feats_rspecifier: str, stats_wspecifier: str,
                             spk2utt_rspecifier: str | None = None) -> CmvnReport:
    """compute-cmvn-stats: per speaker with `--spk2utt`, else per utterance."""
    report = CmvnReport()
    if spk2utt_rspecifier is None:
        def per_utt():
            for utt, feats in read_matrix_table(feats_rspecifier):
                report.done += 1
                yield utt, compute_cmvn_stats([feats])

        write_matrix_table(stats_wspecifier, per_utt())
        return report
    spk2utt = read_spk2utt(spk2utt_rspecifier)
    feats = MatrixTable(feats_rspecifier)

    def per_speaker():
        for spk, utts in spk2utt.items():
            found = [u for u in utts if u in feats]
            for utt in utts:
                if utt not in feats:
                    print(f"WARNING: no features for utterance {utt} (speaker {spk})", file=sys.stderr)
            report.missing_utts += len(utts) - len(found)
            if not found:
                print(f"WARNING: no stats accumulated for speaker {spk}", file=sys.stderr)
                report.empty_speakers += 1
                continue
            report.done += 1
            yield spk, compute_cmvn_stats(feats[u] for u in found)

    write_matrix_table(stats_wspecifier, per_speaker())
    return report


def frame_shift_seconds(config: str) -> float:
    return float(resolve_options(config)["frame-shift"]) / 1000.0


# -- command line ---------------------------------------------------------------------------

def _add_mfcc_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="Kaldi config file (e.g. conf/mfcc.conf)")
    for name, opt in MFCC_OPTIONS.items():
        is_bool = opt.parse is kaldi_bool
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), type=opt.parse, default=argparse.SUPPRESS,
                       nargs="?" if is_bool else None, const=True if is_bool else None,
                       help=f"(default {opt.default})")


def main(argv=None) -> int:
    p = KaldiArgumentParser(prog="features.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("compute-mfcc-feats", usage="compute-mfcc-feats [options] <wav-rspecifier> <feats-wspecifier>",
                       help="MFCC features of every wav in an scp")
    _add_mfcc_options(m)
    m.add_argument("wav_rspecifier")
    m.add_argument("feats_wspecifier")
    c = sub.add_parser("compute-cmvn-stats",
                       usage="compute-cmvn-stats [--spk2utt=ark:spk2utt] <feats-rspecifier> <stats-wspecifier>",
                       help="CMVN statistics per speaker or per utterance")
    c.add_argument("--spk2utt", help="rspecifier of spk2utt: stats per speaker")
    c.add_argument("feats_rspecifier")
    c.add_argument("stats_wspecifier")
    f = sub.add_parser("frame-shift", usage="frame-shift <mfcc-config>", help="print the frame shift in seconds")
    f.add_argument("config")
    a = p.parse_args(argv)
    prog = a.command
    try:
        if a.command == "compute-mfcc-feats":
            overrides = {n: getattr(a, n.replace("-", "_")) for n in MFCC_OPTIONS if hasattr(a, n.replace("-", "_"))}
            values = resolve_options(a.config, overrides)
            report = compute_mfcc_feats(values, a.wav_rspecifier, a.feats_wspecifier, a.config or "options")
            print(f"{prog}: {report.line()}", file=sys.stderr)
            return 0 if report.done else 1
        if a.command == "compute-cmvn-stats":
            report = compute_cmvn_stats_table(a.feats_rspecifier, a.stats_wspecifier, a.spk2utt)
            print(f"{prog}: {report.line('speaker' if a.spk2utt else 'utterance')}", file=sys.stderr)
            return 0 if report.done else 1
        print(f"{frame_shift_seconds(a.config):g}")
        return 0
    except (FeatureConfigError, WavError, KaldiFormatError, ValueError, OSError) as e:
        print(f"{prog}: ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
