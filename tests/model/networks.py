"""Small nnet3 networks for the model tests, as config lines (what xconfig_to_configs.py emits)."""
from __future__ import annotations

import numpy as np

from kaldi_avg.kaldi.nnet3.nnet import Nnet


def fast_lstmp_lines(name: str, inp: str, in_dim: int, C: int, R: int, P: int, delay: int,
                     scale: float) -> list[str]:
    return [
        f"component name={name}.W_all type=NaturalGradientAffineComponent input-dim={in_dim + R} output-dim={4 * C}",
        f"component name={name}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C}",
        f"component name={name}.cr_trunc type=BackpropTruncationComponent dim={C + R} "
        f"recurrence-interval={abs(delay)} scale={scale}",
        f"component name={name}.W_rp type=NaturalGradientAffineComponent input-dim={C} output-dim={R + P}",
        f"component-node name={name}.W_all component={name}.W_all "
        f"input=Append({inp}, IfDefined(Offset({name}.r_trunc, {delay})))",
        f"component-node name={name}.lstm_nonlin component={name}.lstm_nonlin "
        f"input=Append({name}.W_all, IfDefined(Offset({name}.c_trunc, {delay})))",
        f"dim-range-node name={name}.c input-node={name}.lstm_nonlin dim-offset=0 dim={C}",
        f"dim-range-node name={name}.m input-node={name}.lstm_nonlin dim-offset={C} dim={C}",
        f"component-node name={name}.rp component={name}.W_rp input={name}.m",
        f"dim-range-node name={name}.r input-node={name}.rp dim-offset=0 dim={R}",
        f"component-node name={name}.cr_trunc component={name}.cr_trunc input=Append({name}.c, {name}.r)",
        f"dim-range-node name={name}.c_trunc input-node={name}.cr_trunc dim-offset=0 dim={C}",
        f"dim-range-node name={name}.r_trunc input-node={name}.cr_trunc dim-offset={C} dim={R}",
    ]


def fast_lstm_lines(name: str, inp: str, in_dim: int, C: int, delay: int, scale: float) -> list[str]:
    return [
        f"component name={name}.W_all type=NaturalGradientAffineComponent input-dim={in_dim + C} output-dim={4 * C}",
        f"component name={name}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C}",
        f"component name={name}.cm_trunc type=BackpropTruncationComponent dim={2 * C} "
        f"recurrence-interval={abs(delay)} scale={scale}",
        f"component-node name={name}.W_all component={name}.W_all "
        f"input=Append({inp}, IfDefined(Offset({name}.m_trunc, {delay})))",
        f"component-node name={name}.lstm_nonlin component={name}.lstm_nonlin "
        f"input=Append({name}.W_all, IfDefined(Offset({name}.c_trunc, {delay})))",
        f"dim-range-node name={name}.m input-node={name}.lstm_nonlin dim-offset={C} dim={C}",
        f"component-node name={name}.cm_trunc component={name}.cm_trunc input={name}.lstm_nonlin",
        f"dim-range-node name={name}.c_trunc input-node={name}.cm_trunc dim-offset=0 dim={C}",
        f"dim-range-node name={name}.m_trunc input-node={name}.cm_trunc dim-offset={C} dim={C}",
    ]


def spec_5_10_config(num_pdfs: int = 8) -> str:
    """The docs/kaldi-formats.md 5.10 network (lda random instead of from a file)."""
    lines = ["input-node name=input dim=4",
             "component name=lda type=FixedAffineComponent input-dim=12 output-dim=12",
             "component-node name=lda component=lda input=Append(Offset(input, -1), input, Offset(input, 1))"]
    lines += fast_lstmp_lines("lstm1", "lda", 12, 8, 2, 2, -1, 0.95)
    lines += fast_lstm_lines("lstm2", "lstm1.rp", 4, 6, -2, 1.0)
    lines += [f"component name=output.affine type=NaturalGradientAffineComponent input-dim=6 output-dim={num_pdfs}",
              "component-node name=output.affine component=output.affine input=lstm2.m",
              f"component name=output.log-softmax type=LogSoftmaxComponent dim={num_pdfs}",
              "component-node name=output.log-softmax component=output.log-softmax input=output.affine",
              "output-node name=output input=Offset(output.log-softmax, 2) objective=linear"]
    return "\n".join(lines) + "\n"


def randomized(nnet: Nnet, seed: int = 0, scale: float = 0.5) -> Nnet:
    """Gives every trainable array random values (so zero-initialised layers are tested too)."""
    rng = np.random.default_rng(seed)
    for comp in nnet.components.values():
        for arr in comp.params().values():
            arr[...] = rng.normal(0, scale, arr.shape).astype(np.float32)
    return nnet


def with_batchnorm_stats(nnet: Nnet, seed: int = 6, count: float = 50.0) -> Nnet:
    """Gives every BatchNormComponent statistics (`count`, random means and variances), so test
    mode normalizes with them rather than with Kaldi's invented ones."""
    rng = np.random.default_rng(seed)
    for comp in nnet.components.values():
        if comp.type_name == "BatchNormComponent":
            comp.set_stats(count, rng.normal(0, 1, comp.block_dim), rng.uniform(0.5, 2, comp.block_dim))
    return nnet


def exported_copy(nnet: Nnet, binary: bool, trans_model=None, priors=None) -> Nnet:
    """The network after the module writes its parameters back and the model goes through Kaldi
    bytes (binary or text): a raw network, or with `trans_model` (and `priors`) an acoustic model;
    asserts the bytes round-trip exactly."""
    from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes
    from kaldi_avg.model.graph import NnetModule
    NnetModule(nnet).write_back()
    model = Nnet3Model(nnet, trans_model, priors)
    data = model.to_bytes(binary)
    again = read_nnet3_bytes(data, "final.raw" if trans_model is None else "final.mdl")
    assert again.to_bytes(binary) == data
    assert again.to_bytes(True) == model.to_bytes(True)
    return again.nnet


def executor_and_reference(nnet: Nnet, feats: np.ndarray, opts, ivector=None) -> tuple[np.ndarray, np.ndarray]:
    """The utterance's output from `NnetModule` chunked as nnet3-compute does, and from the naive
    evaluator (`reference_nnet3.reference_chunked`), for the tests that compare them."""
    from kaldi_avg.kaldi.nnet3.context import model_context
    from kaldi_avg.model.compute import compute_utterance
    from kaldi_avg.model.graph import NnetModule

    from .reference_nnet3 import reference_chunked
    got = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    return got, reference_chunked(nnet, feats, opts, ivector)
