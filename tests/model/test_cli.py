"""`kaldi-avg init/import/export/compute/info` end to end, and bad input with clear errors."""
import os

import numpy as np
import pytest

from kaldi_avg.cli import main
from kaldi_avg.kaldi.binary import KaldiWriter
from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.kaldi.tables import read_matrix_table, write_matrix_table

XCONFIG = """input dim=13 name=input
fixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2) affine-transform-file=configs/lda.mat
fast-lstmp-layer name=fastlstm1 delay=-1 decay-time=20 cell-dim=16 recurrent-projection-dim=4 non-recurrent-projection-dim=4
fast-lstmp-layer name=fastlstm2 delay=-2 decay-time=20 cell-dim=16 recurrent-projection-dim=4 non-recurrent-projection-dim=4
output-layer name=output output-delay=5 dim=NUM_PDFS max-change=1.5
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("configs")
    with open("configs/network.xconfig", "w") as f:
        f.write(XCONFIG)
    w = KaldiWriter(True)
    w.header()
    w.matrix(np.random.default_rng(0).normal(0, 0.3, (65, 66)))
    with open("configs/lda.mat", "wb") as f:
        f.write(w.getvalue())
    rng = np.random.default_rng(1)
    write_matrix_table("ark,scp:feats.ark,feats.scp",
                       [(f"utt{i}", rng.normal(size=(n, 13)).astype(np.float32)) for i, n in enumerate([7, 31, 64])])
    return tmp_path


def run(*args):
    return main(list(args))


def test_init_export_import_round_trip(workdir):
    assert run("init", "--num-pdfs=10", "--seed=3", "configs/network.xconfig", "a.ckpt") == 0
    assert run("export", "a.ckpt", "a.raw") == 0
    assert run("export", "--binary=false", "a.ckpt", "a.txt") == 0
    assert run("import", "a.txt", "b.ckpt") == 0
    assert run("export", "b.ckpt", "b.raw") == 0
    assert open("a.raw", "rb").read() == open("b.raw", "rb").read()
    model = read_nnet3_file("a.raw")
    assert model.nnet.output_dim() == 10 and not model.is_am


def test_compute_same_for_checkpoint_and_exported_file(workdir, capsys):
    run("init", "--num-pdfs=10", "configs/network.xconfig", "a.ckpt")
    run("export", "a.ckpt", "a.raw")
    opts = ["--frames-per-chunk=20", "--extra-left-context=10", "--extra-left-context-initial=0"]
    assert run("compute", *opts, "a.ckpt", "scp:feats.scp", "ark:out1.ark") == 0
    assert run("compute", *opts, "a.raw", "scp:feats.scp", "ark:out2.ark") == 0
    out1, out2 = dict(read_matrix_table("ark:out1.ark")), dict(read_matrix_table("ark:out2.ark"))
    assert sorted(out1) == ["utt0", "utt1", "utt2"]
    for k in out1:
        assert out1[k].shape == (dict(read_matrix_table("scp:feats.scp"))[k].shape[0], 10)
        assert np.array_equal(out1[k], out2[k])
        assert np.allclose(np.exp(out1[k]).sum(1), 1, atol=1e-5)  # log-softmax rows


def test_info_lists_contexts_and_components(workdir, capsys):
    run("init", "--num-pdfs=10", "configs/network.xconfig", "a.ckpt")
    assert run("info", "a.ckpt") == 0
    out = capsys.readouterr().out
    assert "left-context: 0\nright-context: 7\n" in out
    assert "component name=fastlstm1.lstm_nonlin type=LstmNonlinearityComponent" in out
    assert "output-node name=output input=Offset(output.log-softmax, 5) dim=10 objective=linear" in out


def test_bad_inputs_give_clear_errors(workdir, capsys):
    run("init", "--num-pdfs=10", "configs/network.xconfig", "a.ckpt")
    run("export", "a.ckpt", "a.raw")
    data = open("a.raw", "rb").read()
    with open("trunc.raw", "wb") as f:
        f.write(data[: len(data) // 2])
    assert run("info", "trunc.raw") == 1
    assert "trunc.raw" in capsys.readouterr().err
    with open("unknown.raw", "wb") as f:
        f.write(data.replace(b"<LstmNonlinearityComponent>", b"<LstmFancyComponent>", 1))
    assert run("info", "unknown.raw") == 1
    err = capsys.readouterr().err
    assert "LstmFancyComponent" in err and "fastlstm1.lstm_nonlin" in err
    assert run("init", "configs/network.xconfig", "x.ckpt") == 1
    assert "NUM_PDFS" in capsys.readouterr().err
    run("export", "--binary=false", "a.ckpt", "a.txt")
    text = open("a.txt").read().replace("input-dim=264", "input-dim=264")
    text = text.replace("dim-range-node name=fastlstm1.r input-node=fastlstm1.rp dim-offset=0 dim=4",
                        "dim-range-node name=fastlstm1.r input-node=fastlstm1.rp dim-offset=0 dim=5")
    with open("bad.txt", "w") as f:
        f.write(text)
    assert run("info", "bad.txt") == 1
    assert "mismatch" in capsys.readouterr().err.lower()
    assert run("compute", "a.ckpt", "scp:missing.scp", "ark:o.ark") == 1
    assert "missing.scp" in capsys.readouterr().err


def _write_trans_model(path):
    khg = pytest.importorskip("kaldi_hmm_gmm")
    from kaldi_avg.kaldi.binary import KaldiReader
    from kaldi_avg.kaldi.transition import TransitionModel
    topo = khg.HmmTopology()
    topo.read("<Topology>\n<TopologyEntry>\n<ForPhones>\n1 2 3\n</ForPhones>\n"
              "<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>\n"
              "<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>\n"
              "<State> 2 </State>\n</TopologyEntry>\n</Topology>\n")
    tm = khg.TransitionModel(khg.monophone_context_dependency([1, 2, 3], [0, 2, 2, 2]), topo)
    ours = TransitionModel.read(KaldiReader.from_bytes(str(tm).encode()))
    with open(path, "wb") as f:
        f.write(b"\0B" + ours.to_bytes(True))
    return ours.num_pdfs


def test_final_mdl_with_transition_model(workdir, capsys):
    num_pdfs = _write_trans_model("tm.mdl")
    assert run("init", "--trans-model=tm.mdl", "configs/network.xconfig", "a.ckpt") == 0
    assert run("export", "a.ckpt", "final.mdl") == 0
    model = read_nnet3_file("final.mdl")
    assert model.is_am and model.nnet.output_dim() == num_pdfs == model.trans_model.num_pdfs
    assert run("init", "--trans-model=tm.mdl", f"--num-pdfs={num_pdfs + 1}", "configs/network.xconfig",
               "b.ckpt") == 1
    assert "pdfs" in capsys.readouterr().err
