"""benchmarks/vs_kaldi.py without training: the phases, per-iteration times, WER and valid accuracy
read back from small synthetic runs of both sides (run.pl-style logs whose mtimes say when their
jobs ended, timestamped console lines), the table and the JSON of --summarize."""
import argparse
import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vs_kaldi", REPO / "benchmarks" / "vs_kaldi.py")
vs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs)

T0 = 1_800_000_000.0
VALID = ("LOG (nnet3-compute-prob[5.5]:PrintTotalStats():nnet-diagnostics.cc:194) Overall log-likelihood for "
         "'output' is {ll} per frame, over 900 frames.\n"
         "LOG (nnet3-compute-prob[5.5]:PrintTotalStats():nnet-diagnostics.cc:194) Overall accuracy for 'output' "
         "is {acc} per frame, over 900 frames.\n")
TRAIN = "LOG (nnet3-train:PrintTotalStats():nnet-training.cc:307) Overall average objective function for " \
        "'output' is -1.5 over {frames} frames.\n"


def write(path: Path, end: float, body: str = "") -> None:
    """A run.pl-style log (or any file) whose job ended at T0 + end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# command\n# Started at ...\n#\n{body}# Accounting: time=1 threads=1\n"
                    f"# Ended (code 0) at ..., elapsed time 1 seconds\n")
    os.utime(path, (T0 + end, T0 + end))


def console(exp: Path, lines: list[tuple[float, str]], end: float) -> None:
    exp.mkdir(parents=True, exist_ok=True)
    text = [f"{T0:.3f} # bash -c ..."] + [f"{T0 + t:.3f} {line}" for t, line in lines] + [f"{T0 + end:.3f} # exit 0"]
    (exp / "console.log").write_text("\n".join(text) + "\n")


def meta(exp: Path, size: str, side: str, end: float) -> None:
    (exp / "vs_kaldi.meta.json").write_text(json.dumps({"size": size, "side": side, "script": "x", "command": "x",
                                                        "start": T0, "end": T0 + end, "code": 0}))


def decode(exp: Path, wers: list[float]) -> None:
    for i, wer in enumerate(wers):
        (exp / "decode_test").mkdir(parents=True, exist_ok=True)
        (exp / "decode_test" / f"wer_{7 + i}_0.0").write_text(f"%WER {wer:.2f} [ 9 / 100, 0 ins, 0 del, 9 sub ]\n")


def ours_run(exp: Path) -> None:
    """kaldi-avg: launch 0, ranks 2, LDA 3-4, iterations 4.5-10.5 (3 of 2 s: diagnostics 0.5, jobs 1.25,
    averaging 0.25), combination 10.5-12, priors 12-13, export 13-15."""
    log = exp / "log"
    console(exp, [(1.0, "train_rnn.py: 2 rank(s)"), (2.0, "22:00:00 [rank 0] rank 0 of 2 on vm, device cpu"),
                  (2.5, "22:00:00 [rank 0] network: x"), (3.0, "22:00:01 [rank 0] alignments: 100 utterances"),
                  (4.5, "22:00:02 [rank 0] averaging: Kaldi jobs"),
                  (10.5, "22:00:08 [rank 0] combining the models of iterations 2..3"),
                  (12.0, "22:00:09 [rank 0] priors: the combined model's average posterior"),
                  (14.0, "22:00:11 [rank 0] wrote final.mdl")], 15.0)
    write(log / "get_transform.log", 4.0)
    wait = []
    for n in range(3):
        start = 4.5 + 2 * n
        write(log / f"compute_prob_valid.{n}.log", start + 0.25, VALID.format(ll=-2, acc=0.5))
        write(log / f"compute_prob_train.{n}.log", start + 0.5, VALID.format(ll=-2, acc=0.5))
        write(log / f"train.{n}.1.log", start + 1.5, TRAIN.format(frames=1000))
        write(log / f"train.{n}.2.log", start + 1.75, TRAIN.format(frames=1500))
        write(log / f"{'select' if n == 0 else 'average'}.{n}.log", start + 2.0)
        wait.append(f"iter {n}: jobs 2 frames 2500 train-seconds 2.500 data-wait-seconds 0.010 max 0.005 "
                    f"communication-seconds 0.200 iteration-seconds 2.000\n")
    (log / "data_wait.log").write_text("".join(wait))
    write(log / "combine.log", 11.5)
    write(log / "compute_prob_valid.combined.log", 11.8, VALID.format(ll=-0.5, acc=0.81))
    write(exp / "post.combined.vec", 13.0)
    write(exp / "final.mdl", 13.1)
    meta(exp, "tiny", "ours", 15.0)
    decode(exp, [9.6, 8.4, 10.0])


def kaldi_run(exp: Path) -> None:
    """Kaldi: start-up 0-1, egs 1-11, LDA 11-14, init 14-15, iterations 15-27 (3 of 4 s: jobs 3 s,
    averaging 0.5 s, other 0.5 s; background diagnostics end 2 s in), combination 27-30, priors 30-33,
    export 33-36."""
    log = exp / "log"
    lines = [(0.5, "steps/nnet3/train_rnn.py --stage=-10 ..."),
             (1.0, "2026-12-07 22:00:01,000 [steps/nnet3/train_rnn.py:298 - train - INFO ] Generating egs"),
             (11.0, "... INFO ] Computing the preconditioning matrix for input features"),
             (14.0, "... INFO ] Computing initial vector for FixedScaleComponent before softmax"),
             (14.5, "... INFO ] Preparing the initial acoustic model."),
             (14.9, "... INFO ] Training will run for 2.0 epochs = 3 iterations")]
    for n in range(3):
        start = 15.0 + 4 * n
        lines.append((start, f"... INFO ] Iter: {n}/2   Jobs: 2   Epoch: 0.00/2.0 (0.0% complete)   lr: 0.006000"))
        write(log / f"compute_prob_valid.{n}.log", start + 1.0, VALID.format(ll=-2, acc=0.5))
        write(log / f"compute_prob_train.{n}.log", start + 2.0, VALID.format(ll=-2, acc=0.5))
        write(log / f"train.{n}.1.log", start + 2.5, TRAIN.format(frames=3000))
        write(log / f"train.{n}.2.log", start + 3.0, TRAIN.format(frames=3000))
        write(log / f"{'select' if n == 0 else 'average'}.{n}.log", start + 3.5)
    lines += [(27.0, "... INFO ] Doing final combination to produce final.mdl"),
              (30.0, "... INFO ] Getting average posterior for purposes of adjusting the priors."),
              (33.0, "... INFO ] Re-adjusting priors based on computed posteriors"),
              (34.0, "... INFO ] Cleaning up the experiment directory exp/x")]
    console(exp, lines, 36.0)
    write(log / "compute_prob_valid.combined.log", 29.0, VALID.format(ll=-0.6, acc=0.8))
    meta(exp, "tiny", "kaldi", 36.0)
    decode(exp, [10.4, 11.0])


@pytest.fixture()
def runs(tmp_path):
    base = vs.recipe_dir(tmp_path) / "exp" / "vs_kaldi"
    ours_run(base / "tiny_ours")
    kaldi_run(base / "tiny_kaldi")
    return tmp_path, base


def test_ours_phases_and_iterations(runs):
    row = vs.summarize(runs[1] / "tiny_ours")
    ph = row["phases"]
    expected = {"startup": 3.0, "egs": 0.0, "lda": 1.0, "init": 0.5, "iterations": 6.0, "combination": 1.5,
                "priors": 1.0, "export": 2.0}
    assert ph == pytest.approx(expected, abs=0.01)
    assert row["stage_s"] == pytest.approx(15.0)
    assert row["num_iterations"] == 3
    it = row["per_iteration"]
    assert it["diagnostics_s"] == pytest.approx(0.5, abs=0.01)
    assert it["training_s"] == pytest.approx(1.25, abs=0.01)     # after the diagnostics, to the slower job
    assert it["averaging_s"] == pytest.approx(0.25, abs=0.01)
    assert it["wall_s"] == pytest.approx(2.0, abs=0.01)
    assert it["collective_s"] == pytest.approx(0.2)
    assert it["frames_per_s_per_job"] == pytest.approx(2500 / (1.25 * 2), rel=0.01)
    assert not it["background_diagnostics"]
    assert row["wer"] == 8.4 and row["valid_accuracy"] == 0.81 and row["valid_objective"] == -0.5
    assert row["events"]["post.combined.vec"] == pytest.approx(13.0, abs=0.01)
    assert list(row["events"].values()) == sorted(row["events"].values())


def test_kaldi_phases_and_iterations(runs):
    row = vs.summarize(runs[1] / "tiny_kaldi")
    expected = {"startup": 1.0, "egs": 10.0, "lda": 3.0, "init": 1.0, "iterations": 12.0, "combination": 3.0,
                "priors": 3.0, "export": 3.0}
    assert row["phases"] == pytest.approx(expected, abs=0.01)
    it = row["per_iteration"]
    assert it["diagnostics_s"] == pytest.approx(2.0, abs=0.01) and it["background_diagnostics"]
    assert it["training_s"] == pytest.approx(3.0, abs=0.01)      # from the Iter line: diagnostics run beside
    assert it["averaging_s"] == pytest.approx(0.5, abs=0.01)
    assert it["other_s"] == pytest.approx(0.5, abs=0.01)
    assert [r["start"] - T0 for r in row["iterations"]] == pytest.approx([15.0, 19.0, 23.0], abs=0.01)
    assert row["wer"] == 10.4 and row["valid_accuracy"] == 0.8


def test_table_and_json_from_summarize(runs, capsys):
    work, base = runs
    out = work / "out"
    assert vs.main(["--summarize", "--sizes", "tiny", "--sides", "ours,kaldi", "--work-dir", str(work),
                    "--out", str(out), "--name", "t"]) == 0
    table = capsys.readouterr().out
    ours_line = next(line for line in table.splitlines() if line.startswith("tiny       ours"))
    assert " 15.0 " in ours_line and " 0.42 " in ours_line       # 15 s / 36 s
    assert "8.40" in ours_line and "0.810" in ours_line
    kaldi_line = next(line for line in table.splitlines() if line.startswith("tiny       kaldi"))
    assert "2.00*" in kaldi_line                                  # background diagnostics marked
    report = json.loads((out / "t.json").read_text())
    assert [(r["size"], r["side"]) for r in report["rows"]] == [("tiny", "ours"), ("tiny", "kaldi")]
    assert report["rows"][1]["phases"]["egs"] == pytest.approx(10.0, abs=0.01)


def test_failed_run_is_a_table_line(tmp_path):
    exp = tmp_path / "x"
    exp.mkdir()
    (exp / "vs_kaldi.meta.json").write_text(json.dumps({"size": "recipe", "side": "kaldi", "error": "it broke"}))
    row = vs.summarize(exp)
    assert row["error"] == "it broke"
    assert "recipe     kaldi  failed: it broke" in vs.format_table([row])


def test_both_sides_get_the_same_options_and_network():
    args = argparse.Namespace(lrates="0.003,0.0003", cmvn_opts="--norm-means=true", srand=0, epochs=10.0, jobs=2,
                              samples_per_iter=1024, minibatch="128,64", chunk_width=20, chunk_left_context=40,
                              dnn_epochs=2.0, dnn_samples_per_iter=4000, dnn_minibatch="512", egs_nj=2)
    opts = vs.train_options(args, "rnn", "exp/x")
    assert "--trainer.rnn.num-chunk-per-minibatch=128,64" in opts and "--egs.chunk-left-context=40" in opts
    assert not any(o.startswith("--mpi") for o in opts)          # Kaldi's options only
    dnn = vs.train_options(args, "dnn", "exp/x")
    assert "--egs.frames-per-eg=8" in dnn and "--trainer.num-epochs=2" in dnn and "--trainer.num-epochs=10" in opts
    text = vs.xconfig("recipe", "exp/x", 40, 67)
    assert text.startswith("input dim=40 name=input\nfixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2) "
                           "affine-transform-file=exp/x/configs/lda.mat\n")
    assert text.count("fast-lstmp-layer") == 2 and "delay=-2" in text
    assert text.endswith("output-layer name=output input=lstm2 output-delay=5 dim=67 max-change=1.5\n")
    assert "delay" not in vs.xconfig("tdnn", "exp/x", 40, 67)


def test_kaldi_root_is_checked(tmp_path):
    assert vs.kaldi_ok(None) == "KALDI_ROOT is not set"
    assert "is missing" in vs.kaldi_ok(str(tmp_path))
