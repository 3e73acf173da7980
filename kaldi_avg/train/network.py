"""The network the driver trains, from the files `train_rnn.py` reads (docs/kaldi-formats.md 6.2).

`find_network` takes the first of:

1. `--trainer.input-model FILE`: a raw nnet3 network (any nnet3 file) used as 0.raw, as
   train_rnn.py uses it: no configs, no LDA-like transform, the contexts from the network.
2. `<dir>/configs/network.xconfig`: expanded as `xconfig_to_configs.py` does; the driver writes
   configs/ from it.
3. `<dir>/configs/final.config` as `xconfig_to_configs.py` writes it (Kaldi's recipes run that
   script themselves: train_rnn.py never reads an xconfig).
4. `<dir>/configs/layer1.config`, `layer2.config`, ... of the old `steps/nnet3/lstm/make_configs.py`
   (ami s5b, swbd s5c, gale_arabic, sprakbanken): train_rnn.py added them one at a time during
   training until Kaldi 2a18085ee, and has wanted final.config since; kaldi-avg adds them all at once.

For 3 and 4, 0.raw is `nnet3-init init.raw <configs> 0.raw`: the init network is `<dir>/init.raw`
when `--stage` > -5 and it exists (train_rnn.py's stage -5 made it), else configs/init.config (then
written to init.raw). A FixedAffineComponent reading a file named `lda.mat` gets the transform the
driver estimates through the init network (stage -3), as Kaldi's `configs/lda.mat -> ../lda.mat`.
The contexts are the network's own (what `configs/vars` holds).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Protocol

from ..atomic import write_text
from ..kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from ..kaldi.nnet3.context import model_context
from ..kaldi.nnet3.nnet import ComponentNode, Nnet
from ..kaldi.xconfig import write_config_dir
from ..model.build import build_from_configs, build_nnet, matrix_files
from .config import ConfigError
from .expdir import ExpDir

LDA_FILE = "lda.mat"


class Network(Protocol):
    path: str              # the file an error about the network names

    @property
    def description(self) -> str: ...

    @property
    def output_dim_hint(self) -> str: ...

    def reference(self, num_pdfs: int) -> Nnet:
        """The whole network, for its dims and contexts (a random LDA-like transform)."""

    def lda_init_network(self, num_pdfs: int) -> Nnet | None:
        """What the LDA statistics accumulate over; None when the network reads no estimated matrix."""

    def initial_network(self, num_pdfs: int, lda_mat: str | None, seed: int) -> Nnet:
        """0.raw."""

    def write_files(self, exp_dir: str, stage: int, num_pdfs: int, context: tuple[int, int]) -> None:
        """Rank 0, before the LDA stage: what train_rnn.py's inputs leave in the experiment dir."""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass(frozen=True)
class XconfigNetwork:
    path: str
    text: str
    output_dim_hint = " (use dim=NUM_PDFS)"

    @property
    def description(self) -> str:
        return f"{self.path} (expanded as xconfig_to_configs.py does)"

    def reference(self, num_pdfs: int) -> Nnet:
        """ref.config's network, after xconfig_to_configs.py's check, which refuses a network whose
        init network (the LDA's input) needs more context than it (an output-delay=D without
        delay=D on the fixed-affine-layer)."""
        ref = build_nnet(self.text, self.path, num_pdfs, which="ref")
        init = self.lda_init_network(num_pdfs)
        if init is not None:
            (il, ir), (rl, rr) = model_context(init), model_context(ref)
            if il > rl or ir > rr:
                raise ConfigError(f"{self.path}: the init network (the LDA's input) needs context {il}/{ir}, "
                                  f"more than the network's {rl}/{rr}: with output-delay=D on the output layer, "
                                  "give the fixed-affine-layer delay=D (as Kaldi's xconfig_to_configs.py requires)")
        return ref

    def lda_init_network(self, num_pdfs: int) -> Nnet | None:
        if "fixed-affine-layer" not in self.text:
            return None
        return build_nnet(self.text, self.path, num_pdfs, which="init")

    def initial_network(self, num_pdfs: int, lda_mat: str | None, seed: int) -> Nnet:
        return build_nnet(self.text, self.path, num_pdfs, lda_mat, seed=seed)

    def write_files(self, exp_dir: str, stage: int, num_pdfs: int, context: tuple[int, int]) -> None:
        exp = ExpDir(exp_dir)
        if stage <= -1 or not os.path.exists(exp.config("final.config")):
            write_config_dir(self.path, exp.configs, {"NUM_PDFS": num_pdfs})
            write_text(exp.config("vars"), f"model_left_context={context[0]}\n"
                                           f"model_right_context={context[1]}\n")


def _is_lda(path: str) -> bool:
    return os.path.basename(path) == LDA_FILE


@dataclass(frozen=True)
class KaldiConfigs:
    """final.config (or make_configs.py's layer configs), added in turn to the init network."""
    configs: tuple[tuple[str, str], ...]     # (path, text) in the order nnet3-init adds them
    init_config: tuple[str, str] | None      # configs/init.config
    init_raw: str | None                     # <dir>/init.raw, when it stands in for init.config
    output_dim_hint = ""

    @property
    def path(self) -> str:
        return self.configs[-1][0]

    @property
    def description(self) -> str:
        init = self.init_raw or (self.init_config and self.init_config[0])
        paths = ([init] if init else []) + [path for path, _ in self.configs]
        return " + ".join(paths) + " (added in turn, as train_rnn.py's nnet3-init)"

    @property
    def uses_lda(self) -> bool:
        return any(_is_lda(f) for _, text in self.configs for f in matrix_files(text.splitlines()))

    def init_network(self) -> Nnet | None:
        if self.init_raw:
            return read_nnet3_file(self.init_raw).nnet
        return build_from_configs([self.init_config]) if self.init_config else None

    def reference(self, num_pdfs: int) -> Nnet:
        init = self.init_network()
        if self.uses_lda and init is None:
            init_config = os.path.join(os.path.dirname(self.path), "init.config")
            raise ConfigError(f"{self.path}: a FixedAffineComponent reads {LDA_FILE}, which is estimated "
                              f"through the init network, but {init_config} is missing")
        # The LDA-like transform is full-dimensional: as wide as the init network's output.
        dims = f"input-dim={init.output_dim()} output-dim={init.output_dim()}" if self.uses_lda else None
        return build_from_configs(self.configs, init, matrix_fields=lambda f: dims if _is_lda(f) else None)

    def lda_init_network(self, num_pdfs: int) -> Nnet | None:
        return self.init_network() if self.uses_lda else None

    def initial_network(self, num_pdfs: int, lda_mat: str | None, seed: int) -> Nnet:
        return build_from_configs(self.configs, self.init_network(), seed,
                                  lambda f: f"matrix={lda_mat}" if _is_lda(f) else None)

    def write_files(self, exp_dir: str, stage: int, num_pdfs: int, context: tuple[int, int]) -> None:
        if self.init_config and not self.init_raw:   # train_rnn.py's stage -5
            Nnet3Model(self.init_network()).write(ExpDir(exp_dir).init_raw)


@dataclass(frozen=True)
class InputModel:
    path: str
    output_dim_hint = ""

    @property
    def description(self) -> str:
        return f"{self.path} (--trainer.input-model, as 0.raw)"

    def reference(self, num_pdfs: int) -> Nnet:
        return read_nnet3_file(self.path).nnet

    def lda_init_network(self, num_pdfs: int) -> Nnet | None:
        return None

    def initial_network(self, num_pdfs: int, lda_mat: str | None, seed: int) -> Nnet:
        return read_nnet3_file(self.path).nnet

    def write_files(self, exp_dir: str, stage: int, num_pdfs: int, context: tuple[int, int]) -> None:
        pass


def check_cross_entropy_outputs(nnet: Nnet, path: str, trainer: str) -> None:
    """The networks train_rnn.py and train_dnn.py train: one output node, `output`, a linear
    objective on a log-softmax (docs/kaldi-formats.md 6.5). A chain network (an `output` without
    log-softmax, an `output-xent` branch) or any other output node would be trained wrong or
    ignored, so it stops the run, naming the script that trains it."""
    outputs = {n.name: n for n in nnet.output_nodes()}
    if "output-xent" in outputs or ("output" in outputs and not _reads_log_softmax(nnet, outputs["output"])):
        raise ConfigError(f"{path}: a chain network (its 'output' has no log-softmax"
                          f"{', and it has output-xent' if 'output-xent' in outputs else ''}); {trainer} trains "
                          "cross-entropy networks: train it with steps/nnet3/chain/train.py")
    others = sorted(set(outputs) - {"output"})
    if "output" not in outputs or others:
        found = ", ".join(sorted(outputs)) or "none"
        raise ConfigError(f"{path}: {trainer} trains one output node named 'output' (found: {found}); "
                          "multi-output and multilingual networks are not supported")
    if outputs["output"].objective != "linear":
        raise ConfigError(f"{path}: output node 'output' has objective={outputs['output'].objective}; "
                          f"{trainer} trains the linear (cross-entropy) objective")


def check_chain_outputs(nnet: Nnet, path: str, num_pdfs: int, xent_regularize: float) -> None:
    """What chain/train.py trains: 'output' (the chain objective) and, for --chain.xent-regularize,
    'output-xent' (a log-softmax of the same dim); any other output would be ignored."""
    outputs = {n.name: n for n in nnet.output_nodes()}
    others = sorted(set(outputs) - {"output", "output-xent"})
    if "output" not in outputs or others:
        found = ", ".join(sorted(outputs)) or "none"
        raise ConfigError(f"{path}: chain/train.py trains the output nodes 'output' and 'output-xent' (found: "
                          f"{found}); multi-output and multilingual networks are not supported")
    if xent_regularize and "output-xent" not in outputs:
        raise ConfigError(f"{path}: --chain.xent-regularize={xent_regularize:g} needs an 'output-xent' output node "
                          "(output-layer name=output-xent); the network has none")
    if "output-xent" in outputs and nnet.output_dim("output-xent") != num_pdfs:
        raise ConfigError(f"{path}: 'output-xent' has dim {nnet.output_dim('output-xent')} but the tree has "
                          f"{num_pdfs} pdfs")


def _reads_log_softmax(nnet: Nnet, node) -> bool:
    sources = [nnet.node(name) for name in node.input.node_names()]
    return bool(sources) and all(isinstance(n, ComponentNode)
                                 and nnet.components[n.component].type_name == "LogSoftmaxComponent"
                                 for n in sources)


def layer_configs(config_dir: str) -> list[str]:
    """make_configs.py's layer1.config, layer2.config, ... (as many as there are in a row)."""
    paths = (os.path.join(config_dir, f"layer{n}.config") for n in itertools.count(1))
    return list(itertools.takewhile(os.path.isfile, paths))


def find_network(exp_dir: str, stage: int, input_model: str | None) -> Network:
    """The first network file there is (the module's docstring); a ConfigError naming every file
    looked for when there is none."""
    if input_model:
        if not os.path.isfile(input_model):
            raise ConfigError(f"{input_model} is missing (--trainer.input-model)")
        return InputModel(input_model)
    exp = ExpDir(exp_dir)
    config_dir = exp.configs
    xconfig, final = exp.config("network.xconfig"), exp.config("final.config")
    if os.path.isfile(xconfig):
        return XconfigNetwork(xconfig, _read(xconfig))
    paths = [final] if os.path.isfile(final) else layer_configs(config_dir)
    if not paths:
        raise ConfigError(f"--dir {exp_dir}: no network: none of configs/network.xconfig, configs/final.config "
                          "(xconfig_to_configs.py) or configs/layer1.config (steps/nnet3/lstm/make_configs.py) "
                          "is there; write one, or give --trainer.input-model")
    init_config, init_raw = exp.config("init.config"), exp.init_raw
    return KaldiConfigs(tuple((path, _read(path)) for path in paths),
                        (init_config, _read(init_config)) if os.path.isfile(init_config) else None,
                        init_raw if stage > -5 and os.path.isfile(init_raw) else None)
