"""compute-mfcc-feats / compute-cmvn-stats on kaldi-native-fbank, checked against knf itself and
read back with kaldi-native-io (a port of Kaldi's table and CompressedMatrix code)."""
from __future__ import annotations

import ctypes
import os
import wave

import kaldi_native_fbank as knf
import numpy as np
import pytest

from kaldi_avg.frontend import features as F
from kaldi_avg.kaldi.datadir import write_kaldi_map

kaldi_native_io = pytest.importorskip("kaldi_native_io")

# Every option Kaldi's compute-mfcc-feats registers (MfccOptions::Register, its
# FrameExtractionOptions and MelBanksOptions, and the program's own), from the Kaldi source.
KALDI_MFCC_OPTIONS = {
    "sample-frequency", "frame-shift", "frame-length", "preemphasis-coefficient",
    "remove-dc-offset", "dither", "window-type", "blackman-coeff", "round-to-power-of-two",
    "snip-edges", "allow-downsample", "allow-upsample", "max-feature-vectors",
    "num-mel-bins", "low-freq", "high-freq", "vtln-low", "vtln-high", "debug-mel",
    "num-ceps", "use-energy", "energy-floor", "raw-energy", "cepstral-lifter", "htk-compat",
    "output-format", "subtract-mean", "vtln-warp", "vtln-map", "utt2spk", "channel",
    "min-duration", "write-utt2dur",
}

# A value different from Kaldi's default for every option knf implements.
NON_DEFAULT = {
    "sample-frequency": "8000", "frame-shift": "12.5", "frame-length": "30", "dither": "0.5",
    "preemphasis-coefficient": "0.9", "remove-dc-offset": "false", "window-type": "hamming",
    "blackman-coeff": "0.5", "round-to-power-of-two": "false", "snip-edges": "false",
    "num-mel-bins": "30", "low-freq": "60", "high-freq": "-300", "vtln-low": "120",
    "vtln-high": "-400", "debug-mel": "true", "num-ceps": "20", "use-energy": "false",
    "energy-floor": "1.5", "raw-energy": "false", "cepstral-lifter": "20", "htk-compat": "true",
}


def _write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2" if width == 2 else "<i4").tobytes())


def _speechy(seed, seconds=0.6, rate=8000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 3000 * np.sin(2 * np.pi * (200 + 100 * seed) * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return np.round(x + rng.normal(0, 300, t.size)).astype(np.int16)


def _knf_reference(samples, opts, seed):
    """MFCC straight from knf with the same rand() seed."""
    ctypes.CDLL(None).srand(seed)
    m = knf.OnlineMfcc(opts)
    m.accept_waveform(opts.frame_opts.samp_freq, samples.astype(np.float32))
    m.input_finished()
    return np.stack([m.get_frame(i) for i in range(m.num_frames_ready)])


def test_every_kaldi_option_is_known():
    assert set(F.MFCC_OPTIONS) - {"compress", "write-num-frames"} == KALDI_MFCC_OPTIONS
    assert set(NON_DEFAULT) == {n for n, o in F.MFCC_OPTIONS.items() if o.knf is not None}


def test_config_maps_every_option_to_knf(tmp_path):
    conf = tmp_path / "mfcc.conf"
    conf.write_text("# every option, off its default\n\n"
                    + "".join(f"--{n}={v}   # comment\n" for n, v in NON_DEFAULT.items()))
    opts = F.knf_mfcc_options(F.resolve_options(str(conf)))
    got = opts.as_dict()
    flat = {**got["frame_opts"], **got["mel_opts"], **{k: v for k, v in got.items() if not isinstance(v, dict)}}
    for name, text in NON_DEFAULT.items():
        attr = F.MFCC_OPTIONS[name].knf[-1]
        want = F.MFCC_OPTIONS[name].parse(text)
        assert flat[attr] == pytest.approx(want) if isinstance(want, float) else flat[attr] == want, name


def test_defaults_are_kaldis_not_knfs():
    opts = F.knf_mfcc_options(F.resolve_options())
    assert opts.frame_opts.dither == 1.0          # knf's own default is 3e-5
    ref = knf.MfccOptions()
    for field in ("samp_freq", "frame_shift_ms", "frame_length_ms", "preemph_coeff", "window_type"):
        assert getattr(opts.frame_opts, field) == getattr(ref.frame_opts, field)
    assert (opts.num_ceps, opts.use_energy, opts.mel_opts.num_bins) == (13, True, 23)


def test_config_syntax_and_precedence(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("--use_energy=false\n--snip-edges\n--num-ceps=11 # x\n")
    v = F.resolve_options(str(conf), {"num-ceps": 12})
    assert (v["use-energy"], v["snip-edges"], v["num-ceps"]) == (False, True, 12)
    for line, msg in (("num-ceps=3", "invalid option line"), ("--bogus=1", "unknown option --bogus"),
                      ("--num-ceps=x", "bad value for --num-ceps"), ("--num-ceps", "needs a value"),
                      ("--window-type=kaiser", "window type"), ("--use-energy=maybe", "use-energy")):
        conf.write_text(line + "\n")
        with pytest.raises(F.FeatureConfigError, match=msg) as e:
            F.resolve_options(str(conf))
        assert str(conf) in str(e.value)


@pytest.mark.parametrize("line", ["--allow-downsample=true", "--vtln-warp=0.9", "--max-feature-vectors=100",
                                  "--output-format=htk", "--vtln-map=ark:m", "--utt2spk=ark:u"])
def test_options_knf_lacks_are_refused(tmp_path, line):
    conf = tmp_path / "c.conf"
    conf.write_text(line + "\n--allow-upsample=false\n")   # the default value is fine
    with pytest.raises(F.FeatureConfigError, match="not supported"):
        F.resolve_options(str(conf))


def test_knf_rejections_name_the_config(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("--sample-frequency=8000\n--num-ceps=30\n")
    with pytest.raises(F.FeatureConfigError, match="c.conf.*num-ceps"):
        F.MfccComputer(F.resolve_options(str(conf)), str(conf))


@pytest.fixture
def wavs(tmp_path):
    scp = {}
    for i, utt in enumerate(["spkA-1", "spkA-2", "spkB-1"]):
        path = tmp_path / f"{utt}.wav"
        _write_wav(path, _speechy(i))
        scp[utt] = str(path)
    scp["spkB-2"] = f"cat {scp['spkB-1']} |"           # pipes work as in Kaldi's wav.scp
    write_kaldi_map(str(tmp_path / "wav.scp"), scp)
    return tmp_path


@pytest.mark.parametrize("dither", [0.0, 1.0])
def test_features_equal_knf_and_kaldi_reads_them(wavs, dither):
    values = F.resolve_options(None, {"sample-frequency": 8000.0, "dither": dither, "use-energy": False,
                                      "write-num-frames": f"ark,t:{wavs}/utt2num_frames",
                                      "write-utt2dur": f"ark,t:{wavs}/utt2dur"})
    report = F.compute_mfcc_feats(values, f"scp:{wavs}/wav.scp", f"ark,scp:{wavs}/raw.ark,{wavs}/raw.scp")
    assert report.done == 4 and "Done 4 out of 4" in report.line()
    opts = F.knf_mfcc_options(values)
    reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{wavs}/raw.scp")
    frames = dict(kaldi_native_io.SequentialInt32Reader(f"ark,t:{wavs}/utt2num_frames"))
    durations = dict(kaldi_native_io.SequentialDoubleReader(f"ark,t:{wavs}/utt2dur"))
    for i, utt in enumerate(["spkA-1", "spkA-2", "spkB-1"]):
        want = _knf_reference(_speechy(i), opts, F.utterance_seed(utt))
        got = np.asarray(reader[utt])
        np.testing.assert_array_equal(got, want)
        assert frames[utt] == want.shape[0] and durations[utt] == pytest.approx(0.6)
    # the piped copy of spkB-1 differs from it only through its own dither seed
    piped = np.array(reader["spkB-2"])      # a copy: the reader reuses its buffer
    same = np.array_equal(piped, np.array(reader["spkB-1"]))
    assert same == (dither == 0.0)


def test_compressed_output_and_subtract_mean(wavs):
    values = F.resolve_options(None, {"sample-frequency": 8000.0, "compress": True, "subtract-mean": True})
    F.compute_mfcc_feats(values, f"scp:{wavs}/wav.scp", f"ark,scp:{wavs}/cm.ark,{wavs}/cm.scp")
    reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{wavs}/cm.scp")
    with open(f"{wavs}/cm.ark", "rb") as f:
        assert b"\0BCM " in f.read(64)                   # Kaldi's CompressedMatrix, method CM
    want = _knf_reference(_speechy(0), F.knf_mfcc_options(values), F.utterance_seed("spkA-1"))
    got = np.asarray(reader["spkA-1"])
    np.testing.assert_allclose(got, want - want.mean(axis=0), atol=0.05 * np.abs(want).max())
    np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=0.05)


def test_short_files_are_skipped_and_counted(wavs):
    _write_wav(wavs / "short.wav", np.zeros(50, dtype=np.int16))
    write_kaldi_map(str(wavs / "short.scp"), {"a": str(wavs / "short.wav"), "b": str(wavs / "spkA-1.wav")})
    values = F.resolve_options(None, {"sample-frequency": 8000.0})
    report = F.compute_mfcc_feats(values, f"scp:{wavs}/short.scp", f"ark:{wavs}/s.ark")
    assert (report.done, report.too_short) == (1, 1) and "skipped 1 too short" in report.line()
    values = F.resolve_options(None, {"sample-frequency": 8000.0, "min-duration": 1.0})
    assert F.compute_mfcc_feats(values, f"scp:{wavs}/short.scp", f"ark:{wavs}/s.ark").done == 0


def test_stereo_channel_selection(tmp_path):
    left, right = _speechy(0), _speechy(1)
    _write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1).ravel(), channels=2)
    write_kaldi_map(str(tmp_path / "wav.scp"), {"u": str(tmp_path / "st.wav")})
    out = {}
    for ch in (0, 1, 2):
        values = F.resolve_options(None, {"sample-frequency": 8000.0, "dither": 0.0, "channel": ch})
        rep = F.compute_mfcc_feats(values, f"scp:{tmp_path}/wav.scp", f"ark,scp:{tmp_path}/{ch}.ark,{tmp_path}/{ch}.scp")
        if ch < 2:
            reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{tmp_path}/{ch}.scp")
            out[ch] = np.array(reader["u"])         # copied while the reader (which owns it) lives
        else:
            assert rep.missing_channel == 1
    opts = F.knf_mfcc_options(F.resolve_options(None, {"sample-frequency": 8000.0, "dither": 0.0}))
    np.testing.assert_array_equal(out[1], _knf_reference(right, opts, 0))


@pytest.mark.parametrize("case", ["missing", "garbage", "rate", "8bit", "pipe"])
def test_bad_wavs_name_file_and_utterance(tmp_path, case):
    path = tmp_path / "x.wav"
    if case == "garbage":
        path.write_bytes(b"RIFF....not a wave file")
    elif case == "rate":
        _write_wav(path, _speechy(0, rate=16000), rate=16000)
    elif case == "8bit":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(1), w.setframerate(8000), w.writeframes(bytes(800))
    rx = f"false {path} |" if case == "pipe" else str(path)
    write_kaldi_map(str(tmp_path / "wav.scp"), {"the-utt": rx})
    values = F.resolve_options(None, {"sample-frequency": 8000.0})
    with pytest.raises(F.WavError, match=r"x\.wav.*the-utt"):
        F.compute_mfcc_feats(values, f"scp:{tmp_path}/wav.scp", f"ark,scp:{tmp_path}/o.ark,{tmp_path}/o.scp")
    assert not os.path.exists(tmp_path / "o.ark"), "a failed run leaves no partial archive"


def test_cmvn_stats_layout_per_speaker_and_per_utterance(wavs, capsys):
    values = F.resolve_options(None, {"sample-frequency": 8000.0, "use-energy": False})
    F.compute_mfcc_feats(values, f"scp:{wavs}/wav.scp", f"ark,scp:{wavs}/f.ark,{wavs}/f.scp")
    write_kaldi_map(str(wavs / "spk2utt"), {"spkA": ["spkA-1", "spkA-2"], "spkB": ["spkB-1", "spkB-2", "spkB-9"],
                                            "spkC": ["spkC-1"]})
    report = F.compute_cmvn_stats_table(f"scp:{wavs}/f.scp", f"ark,scp:{wavs}/cmvn.ark,{wavs}/cmvn.scp",
                                        f"ark:{wavs}/spk2utt")
    assert (report.done, report.missing_utts, report.empty_speakers) == (2, 2, 1)
    assert "spkB-9" in capsys.readouterr().err
    feats = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{wavs}/f.scp")
    stats = kaldi_native_io.RandomAccessDoubleMatrixReader(f"scp:{wavs}/cmvn.scp")
    assert [k for k, _ in kaldi_native_io.SequentialDoubleMatrixReader(f"scp:{wavs}/cmvn.scp")] == ["spkA", "spkB"]
    for spk, utts in (("spkA", ["spkA-1", "spkA-2"]), ("spkB", ["spkB-1", "spkB-2"])):
        x = np.concatenate([np.array(feats[u], dtype=np.float64) for u in utts])
        s = np.array(stats[spk])
        assert s.shape == (2, 14)
        np.testing.assert_allclose(s[0, :13], x.sum(axis=0), rtol=1e-5)
        np.testing.assert_allclose(s[1, :13], (x * x).sum(axis=0), rtol=1e-5)
        assert (s[0, 13], s[1, 13]) == (len(x), 0.0)
        # knf's own CMVN accumulator agrees
        np.testing.assert_allclose(s, np.asarray(knf.compute_cmvn_stats(x.astype(np.float32))), rtol=1e-5)
    per_utt = F.compute_cmvn_stats_table(f"scp:{wavs}/f.scp", f"ark:{wavs}/u.ark")
    assert per_utt.done == 4
    first_key, first = next(iter(kaldi_native_io.SequentialDoubleMatrixReader(f"ark:{wavs}/u.ark")))
    assert (first_key, np.array(first)[0, 13]) == ("spkA-1", np.array(feats["spkA-1"]).shape[0])


def test_command_line(wavs, tmp_path, capsys):
    conf = tmp_path / "mfcc.conf"
    conf.write_text("--sample-frequency=8000\n--use-energy=false\n")
    rc = F.main(["compute-mfcc-feats", f"--config={conf}", "--num-ceps", "10", "--compress=true",
                 f"scp:{wavs}/wav.scp", f"ark,scp:{wavs}/c.ark,{wavs}/c.scp"])
    assert rc == 0 and "Done 4 out of 4" in capsys.readouterr().err
    reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{wavs}/c.scp")
    assert np.array(reader["spkA-1"]).shape[1] == 10
    assert F.main(["frame-shift", str(conf)]) == 0 and capsys.readouterr().out.strip() == "0.01"
    with pytest.raises(SystemExit) as e:
        F.main(["compute-mfcc-feats", "--dither=x", f"scp:{wavs}/wav.scp", "ark:/dev/null"])
    assert e.value.code == 1
    assert F.main(["compute-mfcc-feats", f"scp:{wavs}/wav.scp", "ark:/dev/null"]) == 1   # 16 kHz default
    assert "sample rate 8000 Hz differs" in capsys.readouterr().err


def _fsdd_benchmark():
    """benchmarks/fsdd_mono_gmm.py as a module (it is a script, not part of the package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "fsdd_mono_gmm.py")
    spec = importlib.util.spec_from_file_location("fsdd_mono_gmm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("compress", [None, False])
def test_fsdd_benchmark_stores_features_as_make_mfcc(wavs, compress):
    # Kaldi's steps/make_mfcc.sh pipes compute-mfcc-feats through copy-feats --compress=true by
    # default, so its GMM and CMVN stats see CM-compressed features; so must the benchmark's
    # (by default; --compress false keeps them plain).
    write_kaldi_map(str(wavs / "spk2utt"), {"spkA": "spkA-1 spkA-2", "spkB": "spkB-1 spkB-2"})
    bench = _fsdd_benchmark()
    if compress is None:
        bench.make_features(wavs, 1.0)
    else:
        bench.make_features(wavs, 1.0, compress)
    compressed = compress is None
    with open(wavs / "feats.ark", "rb") as f:
        assert (b"\0BCM " in f.read(64)) == compressed
    values = F.resolve_options(None, {"sample-frequency": 8000.0, "use-energy": False})
    want = _knf_reference(_speechy(0), F.knf_mfcc_options(values), F.utterance_seed("spkA-1"))
    reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{wavs}/feats.scp")
    got = np.array(reader["spkA-1"])        # a copy: the reader reuses its buffer
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max() if compressed else 1e-4)
    assert (wavs / "cmvn.scp").read_text().split()[::2] == ["spkA", "spkB"]    # CMVN per speaker
