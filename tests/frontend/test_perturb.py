"""3-way speed perturbation (utils/data/perturb_data_dir_speed_3way.sh): the data dir it writes,
and the sox pipes in its wav.scp read by kaldiio (real Kaldi-format code) and by our MFCC."""
from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from kaldi_avg.frontend import perturb as P
from kaldi_avg.frontend.features import read_wav
from kaldi_avg.kaldi.datadir import DataDir, read_kaldi_map

REPO = Path(__file__).resolve().parents[2]
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (apt-get install sox)")


def _write_wav(path: Path, seconds: float, rate: int = 8000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 3000 * np.sin(2 * np.pi * 300 * t) + rng.normal(0, 300, t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(x).astype("<i2").tobytes())


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    utts = {"a-1": ("a", 0.5), "a-2": ("a", 0.8), "b-1": ("b", 0.6)}
    for k, (_, sec) in utts.items():
        _write_wav(tmp_path / f"{k}.wav", sec, seed=len(k))
    (d / "wav.scp").write_text("".join(f"{k} {tmp_path / k}.wav\n" for k in utts))
    (d / "text").write_text("a-1 one\na-2 two three\nb-1 four\n")
    (d / "utt2spk").write_text("a-1 a\na-2 a\nb-1 b\n")
    (d / "spk2utt").write_text("a a-1 a-2\nb b-1\n")
    (d / "utt2dur").write_text("a-1 0.5\na-2 0.8\nb-1 0.6\n")
    return d


def test_wav_scp_entries_pipe_through_sox():
    assert P.sox_speed_rxfilename("/w/x.wav", 0.9, "u") == "sox -R -t wav /w/x.wav -t wav - speed 0.9 |"
    assert (P.sox_speed_rxfilename("flac -dc x.flac |", 1.1, "u")
            == "flac -dc x.flac | sox -R -t wav - -t wav - speed 1.1 |")
    with pytest.raises(P.PerturbError, match="utterance u .*archive offset"):
        P.sox_speed_rxfilename("/w/all.ark:123", 0.9, "u")


@needs_sox
def test_three_way_data_dir(data_dir, tmp_path):
    dest = tmp_path / "train_sp"
    assert P.perturb_speed_3way(str(data_dir), str(dest)) == 9
    d = DataDir(str(dest))
    d.validate(no_feats=True)
    assert d.utts == ["a-1", "a-2", "b-1", "sp0.9-a-1", "sp0.9-a-2", "sp0.9-b-1",
                      "sp1.1-a-1", "sp1.1-a-2", "sp1.1-b-1"]
    assert d.utt2spk["sp0.9-a-2"] == "sp0.9-a" and d.utt2spk["a-2"] == "a"
    assert d.text["sp1.1-a-2"] == "two three"
    assert d.utt2uniq["sp0.9-b-1"] == "b-1" and d.utt2uniq["b-1"] == "b-1"
    assert d.utt2dur["sp0.9-a-2"] == pytest.approx(0.8 / 0.9, rel=1e-5)
    assert d.wav_scp["a-1"] == f"{tmp_path / 'a-1'}.wav"
    assert d.wav_scp["sp1.1-a-1"] == f"sox -R -t wav {tmp_path / 'a-1'}.wav -t wav - speed 1.1 |"
    no_spk = tmp_path / "train_sp_nospk"
    P.perturb_speed_3way(str(data_dir), str(no_spk), include_spk_prefix=False)
    assert read_kaldi_map(str(no_spk / "utt2spk"))["sp0.9-a-1"] == "a"


@needs_sox
def test_perturbed_audio_is_read_alike_by_kaldiio_and_us(data_dir, tmp_path):
    kaldiio = pytest.importorskip("kaldiio")
    dest = tmp_path / "train_sp"
    P.perturb_speed_3way(str(data_dir), str(dest))
    theirs = kaldiio.load_scp(str(dest / "wav.scp"))
    for utt, seconds in (("a-2", 0.8), ("sp0.9-a-2", 0.8 / 0.9), ("sp1.1-a-2", 0.8 / 1.1)):
        rate, samples = theirs[utt]
        ours, our_rate = read_wav(DataDir(str(dest)).wav_scp[utt], utt)
        assert rate == our_rate == 8000
        np.testing.assert_array_equal(ours[0], samples.astype(np.float32))
        assert len(samples) == pytest.approx(seconds * 8000, abs=2)


@needs_sox
def test_refusals_name_the_file(data_dir, tmp_path, monkeypatch):
    with pytest.raises(P.PerturbError, match="must differ"):
        P.perturb_speed_3way(str(data_dir), str(data_dir))
    dest = tmp_path / "train_sp"
    dest.mkdir()
    (dest / "feats.scp").write_text("")
    with pytest.raises(P.PerturbError, match="feats.scp already exists"):
        P.perturb_speed_3way(str(data_dir), str(dest))
    (data_dir / "wav.scp").write_text(f"a-1 {tmp_path}/a-1.wav\n")
    with pytest.raises(P.PerturbError, match="wav.scp: no entry for utterance a-2"):
        P.perturb_speed_3way(str(data_dir), str(tmp_path / "other"))
    monkeypatch.setattr(P.shutil, "which", lambda _: None)
    with pytest.raises(P.PerturbError, match="sox: command not found"):
        P.perturb_speed_3way(str(data_dir), str(tmp_path / "other"))


@needs_sox
def test_shell_wrapper(data_dir, tmp_path):
    dest = tmp_path / "train_sp"
    script = REPO / "utils" / "data" / "perturb_data_dir_speed_3way.sh"
    env = {"PATH": f"{REPO / 'venv' / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    r = subprocess.run([str(script), str(data_dir), str(dest)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "9 utterances" in r.stderr
    r = subprocess.run([str(script), str(data_dir), str(data_dir)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "ERROR" in r.stderr and "must differ" in r.stderr
