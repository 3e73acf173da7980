"""The embedded default corpus: connected digit strings spoken by espeak-ng (docs/dependencies.md 5).

Every "speaker" is an espeak-ng voice variant (m1-m8, f1-f5, klatt*, named variants) with its
own base pitch, pitch range and speaking rate. Test speakers use standard voice variants that
no training speaker uses, so train and test are speaker-disjoint in the strong sense. Each
utterance is 1-7 digit words (optionally "oh" for zero), resampled from espeak's 22050 Hz
with a band-limited resampler, padded with a little silence, scaled to a random level and
mixed with white noise at a random SNR.

Determinism: espeak-ng keeps synthesis state (pitch flutter, noise generators) in globals that
survive espeak_Terminate, so an utterance depends on everything synthesised before it in the
process. The library is therefore initialised once in the parent process, which never
synthesises; each utterance is rendered in a freshly forked worker that starts from that
pristine state, with espeak's random seed and all random choices derived from (seed, split,
index). The corpus is identical for any `--nj` and any order. Synthesis uses espeak's
synchronous output mode: samples still arrive through the callback, but in the calling
thread (the retrieval mode's worker thread would not survive a fork).

    python -m kaldi_avg.frontend.synth [options] <corpus-dir> <data-dir>

writes `<corpus-dir>/{train,test}/<utt>.wav` (16-bit PCM), `<corpus-dir>/speakers.txt`
and the data dirs `<data-dir>/{train,test}` (wav.scp, text, utt2spk, spk2utt).
"""
from __future__ import annotations

import ctypes
import math
import os
import pickle
import select
import signal
import sys
import wave
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_path, write_lines
from ..options import KaldiArgumentParser
from .dataprep import DIGIT_WORDS, Utterance, write_data_dir
from .resample import resample

# espeak-ng's standard voice variants; test speakers are drawn from these.
STANDARD_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
)
# Training draws from all of these: the standard variants and contributed ones that sound like
# a (synthetic) person. Robotic, whispered and croaking variants are left out; the contributed
# ones bend formants much further than the standard ones, which helps training generalise
# but would make a test set of them a test of extreme voices.
DEFAULT_VARIANTS = STANDARD_VARIANTS + (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Lee", "Michael", "Mike", "Nguyen",
    "Reed", "adam", "anika", "aunty", "belinda", "benjamin", "boris", "caleb", "david",
    "edward", "edward2", "grandma", "grandpa", "ian", "linda", "max", "michel", "quincy",
    "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)
SPLITS = ("train", "test")

# espeak-ng's speak_lib.h constants
_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 3, 4, 7
_CHARS_UTF8, _END_PAUSE = 1, 0x1000
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


_PRISTINE: list = []


def _pristine_espeak() -> Espeak:
    """The process's espeak-ng instance, initialised once and never used to synthesise here."""
    if not _PRISTINE:
        _PRISTINE.append(Espeak())
    return _PRISTINE[0]


class SynthError(RuntimeError):
    """espeak-ng failed; the message names the voice and the utterance."""


class Espeak:
    """espeak-ng through ctypes, as shipped by the espeakng-loader wheel."""

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0,
                                                 espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise SynthError(f"espeak_Initialize failed (data path {espeakng_loader.get_data_path()})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)   # kept referenced: espeak holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
                   word_gap: int, seed: int) -> np.ndarray:
        """int16 samples at `self.sample_rate`."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SynthError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                             (_PARAM_RANGE, pitch_range), (_PARAM_WORDGAP, word_gap)):
            lib.espeak_SetParameter(param, int(value), 0)
        lib.espeak_ng_SetRandSeed(seed)
        self._chunks = []
        data = text.encode()
        status = lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8 | _END_PAUSE, None, None)
        lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise SynthError(f"espeak_Synth failed (status {status}) for {text!r} with voice {voice!r}")
        return np.concatenate(self._chunks)


@dataclass(frozen=True)
class SynthOptions:
    seed: int = 0
    num_train_speakers: int = 24
    num_test_speakers: int = 6
    num_train_utts: int = 600
    num_test_utts: int = 120
    min_digits: int = 1
    max_digits: int = 7
    oh_prob: float = 0.0
    snr_min: float = 15.0
    snr_max: float = 40.0
    sample_rate: int = 8000
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    test_variants: tuple[str, ...] = STANDARD_VARIANTS
    language: str = "en-us"

    def check(self) -> None:
        if self.num_train_speakers < 1 or self.num_test_speakers < 1:
            raise ValueError("need at least one train and one test speaker")
        if self.num_train_utts < self.num_train_speakers or self.num_test_utts < self.num_test_speakers:
            raise ValueError("need at least one utterance per speaker")
        test_pool = set(self.variants) & set(self.test_variants)
        if len(test_pool) < self.num_test_speakers or len(set(self.variants)) <= self.num_test_speakers:
            raise ValueError(f"{len(test_pool)} test voice variants (of {len(set(self.variants))}) cannot "
                             f"give {self.num_test_speakers} test speakers their own voices and leave "
                             f"voices for training")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"bad digit range {self.min_digits}..{self.max_digits}")
        if not 0.0 <= self.oh_prob <= 1.0:
            raise ValueError(f"--oh-prob must be in [0, 1], got {self.oh_prob}")
        if self.snr_min > self.snr_max:
            raise ValueError(f"--snr-min {self.snr_min} > --snr-max {self.snr_max}")
        if self.sample_rate <= 0:
            raise ValueError(f"bad --sample-rate {self.sample_rate}")


@dataclass(frozen=True)
class SynthSpeaker:
    speaker_id: str
    variant: str
    pitch: int          # espeak 0-100
    pitch_range: int    # espeak 0-100
    rate: int           # words per minute


@dataclass(frozen=True)
class SynthUtterance:
    utt_id: str
    speaker: SynthSpeaker
    words: tuple[str, ...]
    split: int          # index into SPLITS; with `index` it seeds every random choice
    index: int


def make_speakers(opts: SynthOptions) -> dict[str, list[SynthSpeaker]]:
    """Train and test speakers; test voices are variants no training speaker uses."""
    rng = np.random.default_rng([opts.seed, 1000])
    variants = [opts.variants[i] for i in rng.permutation(len(opts.variants))]
    test_variants = [v for v in variants if v in opts.test_variants][:opts.num_test_speakers]
    train_variants = [v for v in variants if v not in test_variants]
    speakers: dict[str, list[SynthSpeaker]] = {}
    k = 0
    for split, pool, count in (("train", train_variants, opts.num_train_speakers),
                               ("test", test_variants, opts.num_test_speakers)):
        speakers[split] = []
        for j in range(count):
            variant = pool[j % len(pool)]
            safe = "".join(c for c in variant if c.isalnum())
            speakers[split].append(SynthSpeaker(
                speaker_id=f"sp{k:03d}-{safe}", variant=variant,
                pitch=int(rng.integers(20, 81)), pitch_range=int(rng.integers(20, 91)),
                rate=int(rng.integers(125, 211))))
            k += 1
    return speakers


def plan_corpus(opts: SynthOptions) -> dict[str, list[SynthUtterance]]:
    """The utterances of each split, spread round-robin over its speakers."""
    opts.check()
    speakers = make_speakers(opts)
    plan = {}
    for split_index, split in enumerate(SPLITS):
        count = opts.num_train_utts if split == "train" else opts.num_test_utts
        spk = speakers[split]
        utts = []
        for n in range(count):
            rng = np.random.default_rng([opts.seed, split_index, n, 0])
            length = int(rng.integers(opts.min_digits, opts.max_digits + 1))
            digits = rng.integers(0, 10, size=length)
            ohs = rng.random(length) < opts.oh_prob
            words = tuple("oh" if d == 0 and oh else DIGIT_WORDS[d] for d, oh in zip(digits, ohs))
            speaker = spk[n % len(spk)]
            utts.append(SynthUtterance(f"{speaker.speaker_id}-{n // len(spk):04d}", speaker, words,
                                       split_index, n))
        plan[split] = utts
    return plan


def _active_power(x: np.ndarray, rate: int) -> float:
    """Mean power of the 10 ms frames within 30 dB of the loudest one (the speech, not the pauses)."""
    hop = max(1, rate // 100)
    frames = x[: len(x) // hop * hop].reshape(-1, hop) if len(x) >= hop else x[None, :]
    energy = np.mean(frames ** 2, axis=1)
    return float(np.mean(energy[energy >= energy.max() * 1e-3]))


def render(espeak: Espeak, utt: SynthUtterance, opts: SynthOptions) -> np.ndarray:
    """The utterance's int16 samples at `opts.sample_rate`."""
    rng = np.random.default_rng([opts.seed, utt.split, utt.index, 1])
    spk = utt.speaker
    rate = int(round(spk.rate * rng.uniform(0.92, 1.08)))
    raw = espeak.synthesize(" ".join(utt.words), f"{opts.language}+{spk.variant}", rate, spk.pitch,
                            spk.pitch_range, int(rng.integers(0, 3)), int(rng.integers(1, 2**31)))
    speech = resample(raw.astype(np.float64), espeak.sample_rate, opts.sample_rate)
    lead, trail = rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.2)
    speech = np.concatenate([np.zeros(int(lead * opts.sample_rate)), speech,
                             np.zeros(int(trail * opts.sample_rate))])
    peak = np.abs(speech).max()
    if peak == 0:
        raise SynthError(f"{utt.utt_id}: espeak-ng produced silence for voice {spk.variant!r}")
    speech *= 32767.0 * 10 ** (rng.uniform(-18.0, -3.0) / 20) / peak
    snr = rng.uniform(opts.snr_min, opts.snr_max)
    noise_std = math.sqrt(_active_power(speech, opts.sample_rate) / 10 ** (snr / 10))
    mixed = speech + rng.normal(0.0, noise_std, size=speech.shape)
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)


def write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit mono PCM, written atomically."""
    with atomic_path(path) as tmp:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


def _fork_each(items, work, nj: int):
    """Runs `work(item)` for every item in its own forked child, at most `nj` at a time, and
    yields the results (small picklable values) in completion order. A failing child's
    error is raised in the parent."""
    running: dict[int, int] = {}          # read end of a child's result pipe -> its pid

    def reap():
        # A pipe reaches EOF when its child has written its result and exited; waiting on that
        # child's pid (not any child) leaves other children of this process alone.
        fd = select.select(list(running), [], [])[0][0]
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        pid = running.pop(fd)
        status = os.waitpid(pid, 0)[1]
        if status != 0 or not data:
            raise SynthError(f"synthesis worker {pid} died (wait status {status})")
        ok, value = pickle.loads(data)
        if not ok:
            raise SynthError(value)
        return value

    try:
        for item in items:
            while len(running) >= nj:
                yield reap()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:                  # child: do one item, report, never return
                os.close(r)
                try:
                    msg = (True, work(item))
                except BaseException as e:
                    msg = (False, f"{type(e).__name__}: {e}")
                with os.fdopen(w, "wb") as f:
                    f.write(pickle.dumps(msg))
                os._exit(0)
            os.close(w)
            running[r] = pid
        while running:
            yield reap()
    finally:
        for fd, pid in running.items():  # only on error: do not leave children behind
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            os.close(fd)


def synthesize_corpus(corpus_dir: str, data_dir: str, opts: SynthOptions, nj: int = 2,
                      progress: bool = True) -> dict[str, float]:
    """Renders every utterance and writes the data dirs; returns seconds of audio per split."""
    from tqdm import tqdm

    plan = plan_corpus(opts)
    corpus_dir = os.path.abspath(corpus_dir)
    for split in SPLITS:
        os.makedirs(os.path.join(corpus_dir, split), exist_ok=True)
    espeak = _pristine_espeak()
    resample(np.zeros(1), espeak.sample_rate, opts.sample_rate)   # builds the filter before forking

    def render_one(utt: SynthUtterance) -> tuple[str, int]:
        samples = render(espeak, utt, opts)
        write_wav(os.path.join(corpus_dir, SPLITS[utt.split], utt.utt_id + ".wav"), samples,
                  opts.sample_rate)
        return utt.utt_id, len(samples)

    todo = [u for split in SPLITS for u in plan[split]]
    lengths: dict[str, int] = {}
    # One forked child per utterance: each starts from the parent's untouched espeak state.
    for utt_id, n in tqdm(_fork_each(todo, render_one, max(1, nj)), total=len(todo),
                          desc="synthesising", unit="utt", disable=not progress):
        lengths[utt_id] = n
    seconds = {}
    for split in SPLITS:
        write_data_dir(os.path.join(data_dir, split), (
            Utterance(u.utt_id, u.speaker.speaker_id,
                      os.path.join(corpus_dir, split, u.utt_id + ".wav"), u.words)
            for u in plan[split]))
        seconds[split] = sum(lengths[u.utt_id] for u in plan[split]) / opts.sample_rate
    speakers = {u.speaker for split in SPLITS for u in plan[split]}
    split_of = {u.speaker.speaker_id: SPLITS[u.split] for split in SPLITS for u in plan[split]}
    write_lines(os.path.join(corpus_dir, "speakers.txt"),
                ["# speaker split variant pitch pitch-range rate-wpm"]
                + [f"{s.speaker_id} {split_of[s.speaker_id]} {s.variant} {s.pitch} {s.pitch_range} {s.rate}"
                   for s in sorted(speakers, key=lambda s: s.speaker_id)])
    return seconds


def main(argv=None) -> int:
    p = KaldiArgumentParser(
        prog="synth.py",
        description="Synthesise the embedded digit-string corpus with espeak-ng and write "
                    "Kaldi data dirs <data-dir>/train and <data-dir>/test.",
        usage="python -m kaldi_avg.frontend.synth [options] <corpus-dir> <data-dir>")
    d = SynthOptions()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-train-speakers", type=int, default=d.num_train_speakers)
    p.add_argument("--num-test-speakers", type=int, default=d.num_test_speakers)
    p.add_argument("--num-train-utts", type=int, default=d.num_train_utts)
    p.add_argument("--num-test-utts", type=int, default=d.num_test_utts)
    p.add_argument("--min-digits", type=int, default=d.min_digits)
    p.add_argument("--max-digits", type=int, default=d.max_digits)
    p.add_argument("--oh-prob", type=float, default=d.oh_prob,
                   help="probability that a zero is said 'oh'")
    p.add_argument("--snr-min", type=float, default=d.snr_min, help="dB")
    p.add_argument("--snr-max", type=float, default=d.snr_max, help="dB")
    p.add_argument("--sample-rate", type=int, default=d.sample_rate)
    p.add_argument("--voices", default=",".join(d.variants),
                   help="comma-separated espeak-ng voice variants to draw speakers from")
    p.add_argument("--test-voices", default=",".join(d.test_variants),
                   help="the variants among --voices that test speakers may use")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("corpus_dir")
    p.add_argument("data_dir")
    a = p.parse_args(argv)
    opts = SynthOptions(a.seed, a.num_train_speakers, a.num_test_speakers, a.num_train_utts,
                        a.num_test_utts, a.min_digits, a.max_digits, a.oh_prob, a.snr_min,
                        a.snr_max, a.sample_rate, tuple(v for v in a.voices.split(",") if v),
                        tuple(v for v in a.test_voices.split(",") if v))
    try:
        seconds = synthesize_corpus(a.corpus_dir, a.data_dir, opts, a.nj)
    except (ValueError, SynthError, OSError) as e:
        print(f"synth.py: {e}", file=sys.stderr)
        return 1
    for split in SPLITS:
        print(f"synth.py: {split}: {seconds[split] / 60:.1f} minutes of audio in "
              f"{os.path.join(a.data_dir, split)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
