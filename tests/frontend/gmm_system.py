"""A small monophone GMM system on FSDD, built once per test session and shared by the front-end
tests: data dirs with MFCCs (kaldi-native-fbank, dither 0), dict and lang dirs, a one-digit
grammar, train_mono, align_si and mkgraph.  About 15-25 s on two cores."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest

from kaldi_avg.frontend.dataprep import DIGIT_WORDS, OOV_WORD, Utterance, write_data_dir, write_dict_dir
from kaldi_avg.frontend.gmm_align import align_si
from kaldi_avg.frontend.gmm_train import MonoConfig, train_mono
from kaldi_avg.frontend.grammar import compile_grammar, one_word_grammar, write_lang_with_grammar
from kaldi_avg.frontend.graph import mkgraph
from kaldi_avg.frontend.lang import Lang, prepare_lang
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.tables import write_matrix_table

REPO = Path(__file__).resolve().parents[2]
FSDD_DIR = Path(os.environ.get("FSDD_DIR", REPO.parent / "shared" / "corpora" / "fsdd"))
TRAIN_SPEAKERS = ("george", "jackson", "nicolas", "theo", "yweweler")
MFCC_CONF = "--sample-frequency=8000\n--use-energy=false\n--dither=0\n"


def recordings_dir() -> Path:
    rec = FSDD_DIR / "recordings"
    if not rec.is_dir():
        pytest.skip(f"FSDD corpus not found at {rec} (set FSDD_DIR)")
    return rec


def mfcc(path: str) -> np.ndarray:
    """MFCC as conf/mfcc.conf above describes (what vosk computes from the same file)."""
    with wave.open(path, "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32)
    o = knf.MfccOptions()
    o.frame_opts.samp_freq = 8000
    o.frame_opts.dither = 0.0
    o.use_energy = False
    c = knf.OnlineMfcc(o)
    c.accept_waveform(8000, x)
    c.input_finished()
    return np.stack([c.get_frame(i) for i in range(c.num_frames_ready)])


def make_data_dir(d: Path, rec: Path, speakers, indices) -> DataDir:
    utts = [Utterance(f"{spk}-{digit}-{i:02d}", spk, str(rec / f"{digit}_{spk}_{i}.wav"), (DIGIT_WORDS[digit],))
            for spk in speakers for digit in range(10) for i in indices]
    write_data_dir(str(d), utts)
    data = DataDir(str(d))
    feats = {u: mfcc(w) for u, w in sorted(data.wav_scp.items())}
    write_matrix_table(f"ark,scp:{d}/feats.ark,{d}/feats.scp", sorted(feats.items()))
    stats = {spk: sum(knf.compute_cmvn_stats(feats[u]) for u in us) for spk, us in data.spk2utt.items()}
    write_matrix_table(f"ark,scp:{d}/cmvn.ark,{d}/cmvn.scp", sorted(stats.items()))
    return DataDir(str(d))


@dataclass(frozen=True)
class GmmSystem:
    root: Path
    train: Path
    test: Path
    lang: Path
    lang_test: Path
    mono: Path
    ali: Path
    graph: Path
    mfcc_conf: Path


@functools.cache
def _build() -> GmmSystem:
    rec = recordings_dir()
    root = Path(tempfile.mkdtemp(prefix="kaldi_avg_gmm_system_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    train = make_data_dir(root / "data" / "train", rec, TRAIN_SPEAKERS, range(6)).path
    test = make_data_dir(root / "data" / "test", rec, TRAIN_SPEAKERS, (40, 41)).path
    (root / "conf").mkdir()
    (root / "conf" / "mfcc.conf").write_text(MFCC_CONF)
    write_dict_dir(str(root / "data" / "local" / "dict"), DIGIT_WORDS)
    prepare_lang(str(root / "data" / "local" / "dict"), OOV_WORD, str(root / "data" / "lang"))
    lang = Lang.load(str(root / "data" / "lang"))
    write_lang_with_grammar(lang.dir, compile_grammar(one_word_grammar(list(DIGIT_WORDS)), lang.words),
                            str(root / "data" / "lang_test"))
    train_mono(train, lang.dir, str(root / "exp" / "mono"), MonoConfig(nj=2))
    align_si(train, lang.dir, str(root / "exp" / "mono"), str(root / "exp" / "mono_ali"), nj=2)
    mkgraph(str(root / "data" / "lang_test"), str(root / "exp" / "mono"), str(root / "exp" / "mono" / "graph"))
    return GmmSystem(root, Path(train), Path(test), Path(lang.dir), root / "data" / "lang_test", root / "exp" / "mono",
                     root / "exp" / "mono_ali", root / "exp" / "mono" / "graph", root / "conf" / "mfcc.conf")


def gmm_system() -> GmmSystem:
    """The shared system (skips the calling test when FSDD is absent)."""
    recordings_dir()
    return _build()
