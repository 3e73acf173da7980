"""Online i-vectors through the driver (docs/kaldi-formats.md 6.11): recipe-style networks whose LDA
layer reads Append(-2..2, ReplaceIndex(ivector, t, 0)) train with Kaldi's options only
(--feat.online-ivector-dir), export, and `kaldi-avg compute --online-ivectors` runs the trained
model; bad i-vector input and networks the trainers would train wrong stop in one line."""
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.cli import main as kaldi_avg
from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.tables import MatrixTable, read_matrix_table, write_matrix_table
from kaldi_avg.model.compute import ChunkOptions, compute_utterances
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.cli import main

from .experiment import make_experiment, train_args, write_online_ivectors

LSTMP = "cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4"
FRONT = """input dim=8 name=ivector
input dim=13 name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2,ReplaceIndex(ivector, t, 0)) affine-transform-file={lda}
"""
# swbd run_blstm_6*.sh scaled down: 3 levels of forward and backward fast-lstmp layers, delay -3/+3
BLSTM = FRONT + "".join(
    f"fast-lstmp-layer name=blstm{k}-forward input={inp} {LSTMP} delay=-3\n"
    f"fast-lstmp-layer name=blstm{k}-backward input={inp} {LSTMP} delay=3\n"
    for k, inp in ((1, "lda"), (2, "Append(blstm1-forward, blstm1-backward)"),
                   (3, "Append(blstm2-forward, blstm2-backward)"))) + \
    "output-layer name=output input=Append(blstm3-forward, blstm3-backward) output-delay=0 dim=NUM_PDFS max-change=1.5\n"
# tedlium/mini_librispeech run_tdnn_lstm_1*.sh scaled down
TDNN_LSTM = FRONT + f"""relu-batchnorm-layer name=tdnn1 dim=16
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=16
fast-lstmp-layer name=lstm1 {LSTMP} delay=-3
relu-batchnorm-layer name=tdnn3 input=Append(-3,0,3) dim=16
fast-lstmp-layer name=lstm2 {LSTMP} delay=-3
output-layer name=output input=lstm2 output-delay=2 dim=NUM_PDFS max-change=1.5
"""
# wsj/librispeech run_tdnn_1*.sh (TDNN-F) scaled down, trained by train_dnn.py
TDNNF = FRONT + """relu-batchnorm-dropout-layer name=tdnn1 dim=32
tdnnf-layer name=tdnnf2 dim=32 bottleneck-dim=8 time-stride=1 bypass-scale=0.66
tdnnf-layer name=tdnnf3 dim=32 bottleneck-dim=8 time-stride=3 bypass-scale=0.66
linear-component name=prefinal-l dim=16 orthonormal-constraint=-1.0
prefinal-layer name=prefinal input=prefinal-l big-dim=32 small-dim=16
output-layer name=output input=prefinal dim=NUM_PDFS
"""
CHAIN = FRONT + """relu-batchnorm-layer name=tdnn1 dim=16
relu-batchnorm-layer name=prefinal-chain input=tdnn1 dim=16
output-layer name=output include-log-softmax=false dim=NUM_PDFS max-change=1.5
relu-batchnorm-layer name=prefinal-xent input=tdnn1 dim=16
output-layer name=output-xent dim=NUM_PDFS learning-rate-factor=5.0 max-change=1.5
"""
COMPUTE = ["--frames-per-chunk=20", "--extra-left-context=5", "--extra-right-context=5",
           "--extra-left-context-initial=0", "--extra-right-context-final=0"]


def dnn_args(exp: dict, **over) -> list[str]:
    """train_dnn.py's own options (Kaldi's names only) for the tiny experiment."""
    opts = {"--feat-dir": exp["data"], "--ali-dir": exp["ali"], "--dir": exp["exp"],
            "--feat.cmvn-opts": "--norm-means=false --norm-vars=false", "--egs.frames-per-eg": "8",
            "--trainer.samples-per-iter": "40", "--trainer.num-epochs": "1",
            "--trainer.optimization.num-jobs-initial": "1", "--trainer.optimization.num-jobs-final": "2",
            "--trainer.optimization.initial-effective-lrate": "0.01",
            "--trainer.optimization.final-effective-lrate": "0.001",
            "--trainer.optimization.minibatch-size": "16,8", "--trainer.prior-subset-size": "20",
            "--trainer.num-jobs-compute-prior": "2", "--trainer.srand": "3", "--stage": "-10"}
    opts.update(over)
    return ["train_dnn.py", *(f"{k}={v}" for k, v in opts.items())]


def experiment(root: str, xconfig: str) -> tuple[dict, str]:
    exp = make_experiment(root)
    with open(os.path.join(exp["exp"], "configs", "network.xconfig"), "w") as f:
        f.write(xconfig.format(lda=os.path.join(exp["exp"], "configs", "lda.mat")))
    return exp, write_online_ivectors(exp)


def rnn_args(exp: dict, ivectors: str, **over) -> list[str]:
    return train_args(exp, **{"--feat.online-ivector-dir": ivectors, "--egs.chunk-right-context": "5",
                              "--egs.chunk-left-context-initial": "0", **over})


def check_exported_model(tmp_path, exp: dict, ivectors: str) -> None:
    """kaldi-avg compute --online-ivectors on final.mdl gives the trained module's outputs, and
    the i-vectors matter to them."""
    final = os.path.join(exp["exp"], "final.mdl")
    nnet = read_nnet3_file(final).nnet
    lda = nnet.components["lda"]
    assert lda.linear_params.shape == (5 * 13 + 8, 5 * 13 + 8)   # the LDA saw the i-vectors
    out = str(tmp_path / "out.ark")
    feats_scp = os.path.join(exp["data"], "feats.scp")
    ivec_scp = os.path.join(ivectors, "ivector_online.scp")
    assert kaldi_avg(["compute", *COMPUTE, f"--online-ivectors=scp:{ivec_scp}", "--online-ivector-period=10",
                      final, f"scp:{feats_scp}", f"ark:{out}"]) == 0
    got = dict(read_matrix_table(f"ark:{out}"))
    feats, ivecs = MatrixTable(feats_scp), MatrixTable(ivec_scp)
    opts = ChunkOptions(frames_per_chunk=20, extra_left_context=5, extra_right_context=5,
                        extra_left_context_initial=0, extra_right_context_final=0, online_ivector_period=10)
    utts = sorted(feats)[:4]
    module = NnetModule(nnet).eval()
    want = dict(compute_utterances(module, [(u, feats[u], ivecs[u]) for u in utts], opts, model_context(nnet)))
    zeroed = dict(compute_utterances(module, [(u, feats[u], 0 * ivecs[u]) for u in utts], opts, model_context(nnet)))
    for u in utts:
        assert np.abs(got[u] - want[u]).max() < 1e-5
        assert np.abs(want[u] - zeroed[u]).max() > 1e-3


@pytest.mark.parametrize("xconfig", [BLSTM, TDNN_LSTM], ids=["blstm", "tdnn-lstm"])
def test_recipe_networks_with_ivectors_train_through_train_rnn(tmp_path, xconfig):
    exp, ivectors = experiment(str(tmp_path / "exp"), xconfig)
    assert main(rnn_args(exp, ivectors)) == 0
    check_exported_model(tmp_path, exp, ivectors)


def test_tdnnf_with_ivectors_trains_through_train_dnn(tmp_path, capsys):
    exp, ivectors = experiment(str(tmp_path / "exp"), TDNNF)
    assert main(dnn_args(exp, **{"--feat.online-ivector-dir": ivectors})) == 0
    err = capsys.readouterr().err
    # 1 epoch over A archives of 8-frame egs is 8 passes over the archives (one eg frame each)
    iterations = [line for line in err.splitlines() if "] iteration " in line]
    assert len(iterations) > 8
    check_exported_model(tmp_path, exp, ivectors)


def test_train_dnn_jobs_train_one_frame_of_each_eg(tmp_path):
    """A job's minibatches are single frames (nnet3-copy-egs --frame), a different frame of the egs
    on each pass over the archives."""
    from kaldi_avg.train.config import RunConfig
    from kaldi_avg.train.options import get_parser
    from kaldi_avg.train.schedule import plan
    exp = make_experiment(str(tmp_path))
    config = RunConfig.from_args(get_parser("train_dnn.py").parse_args(dnn_args(exp)[1:]))
    iterations = plan(config.schedule, num_archives=5)
    assert len(iterations) == int(1 * 5 * 8 * 2 / 3)   # 1 epoch = 5 archives x 8 frames, jobs 1 -> 2
    for it in iterations:   # train_one_iteration: k = processed + job - 1, frame (k // A + k % A + 1) % 8
        ks = range(it.archives_processed, it.archives_processed + it.num_jobs)
        assert it.frames == tuple((k // 5 + k % 5 + 1) % 8 for k in ks)
    assert {f for it in iterations for f in it.frames} == set(range(8))


BAD = {   # damage of the i-vector dir, the option's value ("" leaves it out), the one-line message
    "no i-vector dir for an i-vector network": (lambda d: None, "", "give --feat.online-ivector-dir"),
    "missing ivector_period": (lambda d: os.remove(os.path.join(d, "ivector_period")), "dir",
                               "ivector_period is missing (--feat.online-ivector-dir)"),
    "period mismatch": (lambda d: open(os.path.join(d, "ivector_period"), "w").write("30\n"), "dir",
                        "(mismatched ivector_period, or i-vectors of other features?)"),
    "utterance without i-vectors": (lambda d: rewrite_ivectors(d, lambda iv: iv.pop("spk0-utt02")), "dir",
                                    "ivector_online.scp: no i-vectors for utterance spk0-utt02"),
    "wrong i-vector dim": (lambda d: rewrite_ivectors(d, lambda iv: iv.__setitem__("spk1-utt03", iv["spk1-utt03"][:, :7])),
                           "dir", "utterance spk1-utt03 has i-vectors of dim 7, the network's 'ivector' input expects 8"),
}


def rewrite_ivectors(ivector_dir: str, change) -> None:
    scp = os.path.join(ivector_dir, "ivector_online.scp")
    ivectors = {k: np.array(v) for k, v in MatrixTable(scp).items()}
    change(ivectors)
    write_matrix_table(f"ark,scp:{ivector_dir}/ivector_online.ark,{scp}", sorted(ivectors.items()))


def assert_one_error_line(capsys, message: str) -> None:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_ivectors_are_one_line(tmp_path, capsys, case):
    damage, option, message = BAD[case]
    exp, ivectors = experiment(str(tmp_path), TDNN_LSTM)
    damage(ivectors)
    over = {"--feat.online-ivector-dir": ivectors} if option else {}
    assert main(train_args(exp, **over)) == 1
    assert_one_error_line(capsys, message)


def test_ivector_dir_for_a_network_without_ivector_input_is_one_line(tmp_path, capsys):
    exp = make_experiment(str(tmp_path))
    assert main(train_args(exp, **{"--feat.online-ivector-dir": write_online_ivectors(exp)})) == 1
    assert_one_error_line(capsys, "has no 'ivector' input node")


@pytest.mark.parametrize("script", ["train_rnn.py", "train_dnn.py"])
def test_a_chain_network_stops_the_cross_entropy_trainers_in_one_line(tmp_path, capsys, script):
    exp, ivectors = experiment(str(tmp_path), CHAIN)
    args = rnn_args(exp, ivectors) if script == "train_rnn.py" else \
        dnn_args(exp, **{"--feat.online-ivector-dir": ivectors})
    assert main(args) == 1
    assert_one_error_line(capsys, f"network.xconfig: a chain network (its 'output' has no log-softmax, and it has "
                                  f"output-xent); {script} trains cross-entropy networks: train it with "
                                  "steps/nnet3/chain/train.py")
    assert not os.path.exists(os.path.join(exp["exp"], "0.mdl"))


def test_lda_with_an_alignment_two_frames_short(tmp_path):
    """Inside the 2-frame tolerance, the missing frames weigh 0 in the LDA statistics as in training."""
    from .test_bad_input import UTT, rewrite_alignments
    exp, ivectors = experiment(str(tmp_path), TDNN_LSTM)
    rewrite_alignments(exp, lambda a: a.__setitem__(UTT, a[UTT][:-2]))
    assert main(rnn_args(exp, ivectors, **{"--trainer.num-epochs": "1"})) == 0
    shutil.rmtree(exp["exp"])
