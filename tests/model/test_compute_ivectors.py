"""Online i-vectors at inference, as nnet3-compute and steps/nnet3/decode.sh use them
(docs/kaldi-formats.md 3.5, 7.1): each chunk gets the row of its middle output frame
(`DecodableNnetSimple::GetCurrentIvector`), clamped to the last row when the matrix is at most
50 frames short, an error when it is shorter; the CLI's one-line errors; the decode step
forwarding --online-ivector-dir.

vosk is no cross-check here: it takes no i-vectors from outside (it estimates them itself with
an extractor, final.ie, which these tests do not have) and its looped decodable chooses the
row of each chunk's last frame, not DecodableNnetSimple's middle one.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kaldi_avg.cli import main
from kaldi_avg.data.report import DataError
from kaldi_avg.frontend.decode import DecodeOptions
from kaldi_avg.frontend.decode_steps import decode_loglikes, decode_nnet3
from kaldi_avg.frontend.featpipe import NO_CMVN, feature_loader
from kaldi_avg.kaldi.datadir import DataDir
from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.tables import read_matrix_table, write_matrix_table
from kaldi_avg.kaldi.transition import read_transition_model
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterances, online_ivector_row
from kaldi_avg.model.graph import NnetModule

from .networks import randomized

XCONFIG = """input dim=100 name=ivector
input dim=13 name=input
relu-renorm-layer name=tdnn1 input=Append(-1,0,1,ReplaceIndex(ivector, t, 0)) dim=32
fast-lstmp-layer name=lstm1 cell-dim=16 recurrent-projection-dim=8 non-recurrent-projection-dim=8 delay=-1
output-layer name=output dim={num_pdfs}
"""
PERIOD = 10
OPTS = ChunkOptions(frames_per_chunk=20, extra_left_context=5, extra_left_context_initial=0,
                    online_ivector_period=PERIOD)


def ivector_network(num_pdfs: int = 10, seed: int = 0):
    # random values everywhere: the xconfig's output layer starts at zero and would hide the i-vector
    return randomized(build_nnet(XCONFIG.format(num_pdfs=num_pdfs), "test.xconfig"), seed, scale=0.3)


@pytest.fixture(scope="module")
def nnet():
    return ivector_network()


def kaldi_row(first: int, num: int, rows: int) -> int:
    """GetCurrentIvector, written out: output_t_start + (last - first) / 2, then / period, clamped."""
    last = first + num - 1
    return min((first + (last - first) // 2) // PERIOD, rows - 1)


def direct(module, nnet, feats: np.ndarray, ivectors: np.ndarray) -> np.ndarray:
    """The module run chunk by chunk, each on its edge-padded input and Kaldi's i-vector row."""
    left, right = model_context(nnet)
    out = []
    for first in range(0, len(feats), OPTS.frames_per_chunk):
        num = min(OPTS.frames_per_chunk, len(feats) - first)
        extra_left = OPTS.extra_left_context_initial if first == 0 else OPTS.extra_left_context
        idx = np.clip(np.arange(first - left - extra_left, first + num + right), 0, len(feats) - 1)
        iv = ivectors[kaldi_row(first, num, len(ivectors))]
        with torch.no_grad():
            y = module(torch.from_numpy(feats[idx])[None], left_context=left + extra_left, num_frames=num,
                       ivectors=torch.from_numpy(iv)[None])
        out.append(y[0].numpy())
    return np.concatenate(out)


def test_the_row_is_that_of_the_middle_frame_clamped_within_50_frames():
    assert online_ivector_row("u", 0, 20, 10, PERIOD) == 0    # frame 9: Kaldi halves last - first (19)
    assert online_ivector_row("u", 20, 20, 10, PERIOD) == 2   # frame 29
    assert online_ivector_row("u", 80, 15, 10, PERIOD) == 8   # frame 87
    assert online_ivector_row("u", 80, 15, 7, PERIOD) == 6    # 2 rows short: the last row
    assert online_ivector_row("u", 80, 15, 4, PERIOD) == 3    # 5 rows short = 50 frames: still the last row
    with pytest.raises(DataError, match=r"utterance 'u': .*frame 87, only available till frame 3 \* "
                                        r"ivector-period=10 \(mismatched --online-ivector-period\?\)"):
        online_ivector_row("u", 80, 15, 3, PERIOD)
    with pytest.raises(DataError, match="utterance 'e'"):
        online_ivector_row("e", 0, 5, 0, PERIOD)
    assert online_ivector_row("u", 80, 15, 1, 100) == 0       # frame 87 // 100


def test_each_chunk_gets_kaldis_row(nnet):
    rng = np.random.default_rng(1)
    # (frames, i-vector rows): a full matrix, one short by 3 rows (clamped), one longer than
    # needed, a one-chunk utterance
    shapes = {"full": (95, 10), "short": (95, 7), "long": (43, 9), "tiny": (7, 1)}
    utts = [(k, rng.normal(size=(t, 13)).astype(np.float32), rng.normal(size=(r, 100)).astype(np.float32))
            for k, (t, r) in shapes.items()]
    module = NnetModule(nnet)
    got = dict(compute_utterances(module, utts, OPTS, model_context(nnet)))  # all chunks in one block
    for key, feats, ivectors in utts:
        want = direct(module, nnet, feats, ivectors)
        assert got[key].shape == (len(feats), 10)
        assert np.abs(got[key] - want).max() < 1e-5, key
    # the rows matter: the first row for every chunk gives other outputs
    _, feats, ivectors = utts[0]
    same_row = np.repeat(ivectors[:1], len(ivectors), axis=0)
    assert np.abs(got["full"] - direct(module, nnet, feats, same_row)).max() > 1e-3


def test_far_too_short_ivectors_are_an_error(nnet):
    feats = np.zeros((95, 13), np.float32)
    with pytest.raises(DataError, match=r"utterance 'u1': .*mismatched --online-ivector-period"):
        list(compute_utterances(NnetModule(nnet), [("u1", feats, np.zeros((2, 100), np.float32))], OPTS,
                                model_context(nnet)))


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch, nnet):
    monkeypatch.chdir(tmp_path)
    Nnet3Model(nnet).write("iv.raw")
    Nnet3Model(randomized(build_nnet("input dim=13 name=input\nrelu-layer name=tdnn1 input=Append(-1,0,1) dim=8\n"
                                     "output-layer name=output dim=4\n", "plain.xconfig"))).write("plain.raw")
    rng = np.random.default_rng(2)
    lengths = {"a": 95, "b": 43, "c": 20}
    feats = {k: rng.normal(size=(n, 13)).astype(np.float32) for k, n in lengths.items()}
    write_matrix_table("ark,scp:feats.ark,feats.scp", sorted(feats.items()))
    ivectors = {k: rng.normal(size=(-(-n // PERIOD), 100)).astype(np.float32) for k, n in lengths.items()}
    write_matrix_table("ark,scp:ivec.ark,ivec.scp", sorted(ivectors.items()))
    return feats, ivectors


def compute(*args):
    return main(["compute", "--frames-per-chunk=20", "--extra-left-context=5", "--extra-left-context-initial=0",
                 *args])


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_online_ivectors_equal_compute_utterances(workdir, nnet, capsys):
    feats, ivectors = workdir
    assert compute("--online-ivectors=scp:ivec.scp", f"--online-ivector-period={PERIOD}", "iv.raw",
                   "scp:feats.scp", "ark:out.ark") == 0
    got = dict(read_matrix_table("ark:out.ark"))
    want = dict(compute_utterances(NnetModule(nnet), [(k, feats[k], ivectors[k]) for k in sorted(feats)], OPTS,
                                   model_context(nnet)))
    assert sorted(got) == ["a", "b", "c"]
    for k in got:
        assert np.abs(got[k] - want[k]).max() < 1e-6
    assert "Done 3 utterances, failed for 0" in capsys.readouterr().err


def test_cli_utterance_without_ivectors_fails_as_in_nnet3_compute(workdir, capsys):
    """nnet3-compute warns, counts the utterance as failed and goes on (exit 1 only if none is done)."""
    _, ivectors = workdir
    write_matrix_table("ark:ivec_b.ark", [("b", ivectors["b"])])
    assert compute("--online-ivectors=ark:ivec_b.ark", "--online-ivector-period=10", "iv.raw", "scp:feats.scp",
                   "ark:out.ark") == 0
    err = capsys.readouterr().err
    assert "No online iVector available for utterance a in ark:ivec_b.ark" in err
    assert "Done 1 utterances, failed for 2" in err
    assert sorted(dict(read_matrix_table("ark:out.ark"))) == ["b"]
    write_matrix_table("ark:ivec_none.ark", [("z", ivectors["b"])])
    with pytest.raises(SystemExit):
        compute("--online-ivectors=ark:ivec_none.ark", "--online-ivector-period=10", "iv.raw", "scp:feats.scp",
                "ark:out.ark")


@pytest.mark.parametrize("args, model, words", [
    ([], "iv.raw", ["iv.raw", "'ivector' input of dim 100", "--online-ivectors"]),
    (["--online-ivectors=scp:ivec.scp", "--online-ivector-period=10"], "plain.raw",
     ["plain.raw", "no 'ivector' input"]),
    (["--online-ivectors=scp:ivec.scp"], "iv.raw", ["--online-ivector-period > 0"]),
    (["--online-ivectors=scp:ivec50.scp", "--online-ivector-period=10"], "iv.raw",
     ["ivec50.scp: utterance a has i-vector dim 50, the network's 'ivector' input expects 100"]),
    (["--online-ivectors=scp:ivec_short.scp", "--online-ivector-period=10"], "iv.raw",
     ["ivec_short.scp: utterance 'a': could not get an i-vector for frame 87", "mismatched --online-ivector-period"]),
    (["--online-ivectors=scp:ivec.scp", "--online-ivector-period=1"], "iv.raw",   # a period of 10 taken as 1
     ["ivec.scp: utterance 'a': could not get an i-vector for frame 69", "mismatched --online-ivector-period"]),
])
def test_cli_ivector_errors_are_one_line(workdir, capsys, args, model, words):
    _, ivectors = workdir
    write_matrix_table("ark,scp:ivec50.ark,ivec50.scp", [(k, v[:, :50]) for k, v in sorted(ivectors.items())])
    write_matrix_table("ark,scp:ivec_short.ark,ivec_short.scp", [(k, v[:2]) for k, v in sorted(ivectors.items())])
    assert compute(*args, model, "scp:feats.scp", "ark:out.ark") == 1
    err = one_line(capsys)
    assert err.startswith("kaldi-avg compute: error: ")
    for w in words:
        assert w in err


# -- steps/nnet3/decode.sh --online-ivector-dir -------------------------------------------------

@pytest.fixture(scope="module")
def ivector_system(tmp_path_factory):
    """The FSDD GMM system's graph and test data, a random i-vector network as exp/nnet/final.mdl
    (the GMM's transition model, uniform priors) and an online i-vector dir for the test data."""
    from tests.frontend.gmm_system import gmm_system
    system = gmm_system()
    root = tmp_path_factory.mktemp("ivectors")
    tm = read_transition_model(str(system.ali / "final.mdl"))
    exp = root / "exp" / "nnet"
    exp.mkdir(parents=True)
    Nnet3Model(ivector_network(tm.num_pdfs, seed=3), tm, np.full(tm.num_pdfs, 1 / tm.num_pdfs)).write(
        str(exp / "final.mdl"))
    for f in ("tree", "phones.txt"):
        shutil.copyfile(system.ali / f, exp / f)
    ivector_dir = root / "ivectors_test"
    ivector_dir.mkdir()
    rng = np.random.default_rng(4)
    data = DataDir(str(system.test))
    write_matrix_table(f"ark,scp:{ivector_dir}/ivector_online.ark,{ivector_dir}/ivector_online.scp",
                       [(u, rng.normal(size=(-(-data.feats.shape(u)[0] // PERIOD), 100)).astype(np.float32))
                        for u in data.utts])
    (ivector_dir / "ivector_period").write_text(f"{PERIOD}\n")
    return system, exp, ivector_dir


def test_decode_with_online_ivector_dir_uses_the_ivectors(ivector_system, tmp_path):
    system, exp, ivector_dir = ivector_system
    opts = DecodeOptions(beam=13.0, lattice_beam=6.0)
    decode_dir = exp / "decode_test"
    decode_nnet3(str(system.graph), str(system.test), str(decode_dir), opts, nj=1, skip_scoring=True,
                 online_ivector_dir=str(ivector_dir))
    log = (decode_dir / "log" / "compute.1.log").read_text()
    assert (f"--online-ivectors=scp:{ivector_dir}/ivector_online.scp --online-ivector-period={PERIOD} "
            "--frames-per-chunk=50") in log
    # the same decode from outputs computed here, each chunk with Kaldi's row
    nnet = read_nnet3_file(str(exp / "final.mdl")).nnet
    data = DataDir(str(system.test))
    load = feature_loader(data, NO_CMVN, deltas=False)
    table = dict(read_matrix_table(f"scp:{ivector_dir}/ivector_online.scp"))
    log_priors = np.log(np.full(nnet.output_dim("output"), 1 / nnet.output_dim("output"), np.float32))
    utts = [(u, load(u), table[u]) for u in data.utts]
    opts_50 = ChunkOptions(online_ivector_period=PERIOD)
    write_matrix_table(f"ark:{tmp_path}/loglikes.ark",
                       compute_utterances(NnetModule(nnet), utts, opts_50, model_context(nnet), log_priors))
    decode_loglikes(str(system.graph), str(exp / "final.mdl"), f"ark:{tmp_path}/loglikes.ark", str(tmp_path / "d"),
                    opts)
    hyps = (decode_dir / "hyp.txt").read_text()
    assert len(hyps.splitlines()) == len(data.utts)
    assert (tmp_path / "d" / "hyp.txt").read_text() == hyps


def test_decode_script_checks_the_ivector_dir(ivector_system, tmp_path):
    system, exp, ivector_dir = ivector_system
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bad = tmp_path / "ivectors_bad"
    shutil.copytree(ivector_dir, bad)
    os.unlink(bad / "ivector_period")

    def decode(ivectors):
        return subprocess.run(["bash", os.path.join(repo, "steps", "nnet3", "decode.sh"), "--nj", "1",
                               "--skip-scoring", "true", "--online-ivector-dir", str(ivectors), str(system.graph),
                               str(system.test), str(exp / "decode_bad")], capture_output=True, text=True, env=env,
                              cwd=repo)
    r = decode(bad)
    assert r.returncode == 1 and f"no such file {bad}/ivector_period" in r.stderr
    (bad / "ivector_period").write_text("10\n")
    (bad / "final.ie.id").write_text("abc\n")
    (exp / "final.ie.id").write_text("def\n")
    try:
        r = decode(bad)
    finally:
        os.unlink(exp / "final.ie.id")
    assert r.returncode == 1 and "iVector id def" in r.stderr and "do not match" in r.stderr
