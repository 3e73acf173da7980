"""Our xconfig expansion against the files Kaldi's own steps/nnet3/xconfig_to_configs.py wrote
(tests/data/xconfig/<case>/: network.xconfig is the input; init/ref/final.config and
xconfig.expanded.1/2 are Kaldi's output, kaldi-asr/kaldi f40076610). `tdnn_7q` is the network of
egs/swbd/s5c/local/chain/tuning/run_tdnn_7q.sh with its shell variables filled in (6034 pdfs,
learning-rate-factor 0.5/xent_regularize = 5.0); `small_tdnnf` is a small network with every
tdnnf-layer context, the dropout/so variants of the ReLU layers and the single-component layers;
`small_tdnn_opgru` is a small egs/swbd/s5c/local/chain/tuning/run_tdnn_opgru_1a.sh with all four
OPGRU layer types, with and without gate dropout and l2-regularize, forward and backward;
`small_gru_lstmb` has the gru, pgru (plain, fast-, norm-, fast-norm-) and lstmb layer types;
`small_frontend` has idct-layer (with and without lifter, include-in-init; Kaldi's idct.mat and
idct2.mat kept), spec-augment-layer, delta-layer and combine-feature-maps-layer; `small_cnn` has every
conv-*-layer operation chain, res-block (plain and bottleneck, every bypass source, with and
without zero padding) and channel-average-layer; `small_attention` has the four attention layer
types with several heads, time-stride, one-sided windows and optional inputs on either side;
`small_xvector` is an egs/voxceleb/v2 x-vector network in small (stats-layer mean+stddev over
0..60) and a moving-window mean-only stats-layer branch with input and stats periods."""
import glob
import os

import pytest

from kaldi_avg.kaldi.xconfig import XconfigError, parse_xconfig, write_config_dir

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig")
FILES = ("init.config", "ref.config", "final.config", "xconfig.expanded.1", "xconfig.expanded.2")


def _lines(path):
    with open(path) as f:
        lines = f.read().split("\n")
    # Line 2 echoes the command line (script path, config dir), which differs by invocation.
    return lines[:1] + lines[2:]


@pytest.mark.parametrize("case", ["tdnn_7q", "small_tdnnf", "small_tdnn_opgru", "small_gru_lstmb",
                                  "small_frontend", "small_cnn", "small_attention", "small_xvector"])
def test_configs_equal_kaldis_line_for_line(case, tmp_path, monkeypatch):
    assert_configs_equal_kaldis(case, tmp_path, monkeypatch)


def assert_configs_equal_kaldis(case: str, tmp_path, monkeypatch) -> None:
    """Our config dir from tests/data/xconfig/<case>/network.xconfig equals Kaldi's files there,
    line for line; the matrices the layers write (idct.mat, wherever the xconfig puts them) byte
    for byte."""
    monkeypatch.chdir(tmp_path)  # idct-layer writes its matrix relative to the working directory
    write_config_dir(os.path.join(FIXTURES, case, "network.xconfig"), str(tmp_path), {})
    for name in FILES:
        kaldis = os.path.join(FIXTURES, case, name)
        if not os.path.exists(kaldis):   # Kaldi writes no init.config without an output in it
            assert not (tmp_path / name).exists(), name
            continue
        assert _lines(tmp_path / name) == _lines(kaldis), name
    for kaldis in glob.glob(os.path.join(FIXTURES, case, "*.mat")):
        ours = glob.glob(str(tmp_path / "**" / os.path.basename(kaldis)), recursive=True)
        assert len(ours) == 1 and open(ours[0], "rb").read() == open(kaldis, "rb").read()


@pytest.mark.parametrize("line, message", [
    ("tdnnf-layer name=t dim=12", "bottleneck-dim must be set"),
    ("tdnnf-layer name=t dim=4 bottleneck-dim=5", "dim must be greater"),
    ("tdnnf-layer name=t dim=10 bottleneck-dim=5", "bypass-scale is nonzero"),
    ("tdnnf-layer name=t dim=12 bottleneck-dim=5 context=right", "context=right"),
    ("tdnnf-layer name=t dim=12 bottleneck-dim=5 dropout-proportion=1.5", "dropout-proportion"),
    ("prefinal-layer name=p big-dim=4 small-dim=6", "big-dim must be greater"),
    ("linear-component name=l", "dim= must be given"),
    ("batchnorm-component name=b target-rms=0", "target-rms must be positive"),
    ("norm-opgru-layer name=g cell-dim=8", "recurrent-projection-dim= must be given"),
    ("fast-norm-opgru-layer name=g cell-dim=8 recurrent-projection-dim=5", "exceeds cell dim"),
    ("norm-opgru-layer name=g cell-dim=8 recurrent-projection-dim=2 delay=0", "delay cannot be zero"),
    ("pgru-layer name=g cell-dim=8", "recurrent-projection-dim= must be given"),
    ("fast-gru-layer name=g delay=0", "delay cannot be zero"),
    ("lstmb-layer name=l cell-dim=8", "bottleneck-dim has invalid value"),
    ("stats-layer name=s", "config has to be non-empty"),
    ("stats-layer name=s config=max(0:1:1:10)", "invalid statistic-config"),
    ("stats-layer name=s config=mean(-5:1:2:10)", "invalid configuration of statistics-extraction"),
    ("stats-layer name=s config=mean(0:1:1:10) dim=5", "invalid dim supplied 5 != actual output dim 12"),
    ("attention-renorm-layer name=a key-dim=2 value-dim=2 num-left-inputs=1", "num-right-inputs= must be given"),
    ("attention-relu-renorm-layer name=a key-dim=0 value-dim=2 num-left-inputs=1 num-right-inputs=1",
     "key-dim must be positive"),
    ("attention-relu-batchnorm-layer name=a learning-rate-factor=0", "learning-rate-factor=0.0 must be positive"),
])
def test_layer_errors(line, message):
    with pytest.raises(XconfigError, match=message):
        parse_xconfig(f"input name=input dim=12\n{line}\n")
