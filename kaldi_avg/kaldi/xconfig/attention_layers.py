"""Restricted self-attention layers (Kaldi's `xconfig/attention.py` XconfigAttentionLayer;
component in docs/kaldi-formats.md 4.24 and `kaldi_avg/kaldi/nnet3/components/attention.py`,
layers in 5.15).

`attention-renorm-layer`, `attention-relu-renorm-layer`, `attention-relu-batchnorm-layer` and
`relu-renorm-attention-layer`: a NaturalGradientAffineComponent to the attention's input dim
(keys, values and queries of every head), then the components the name lists in order, the
output being the last one. Kaldi's option set includes `dim` and `dropout-proportion`, which
these four layers never use.
"""
from __future__ import annotations

import math

from .layer import XconfigLayer, ref_and_final


class AttentionLayer(XconfigLayer):
    layer_types = ("attention-renorm-layer", "attention-relu-renorm-layer",
                   "attention-relu-batchnorm-layer", "relu-renorm-attention-layer")

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "max-change": 0.75, "self-repair-scale": 1.0e-05,
                "target-rms": 1.0, "learning-rate-factor": 1.0, "ng-affine-options": "",
                "l2-regularize": 0.0, "num-left-inputs-required": -1, "num-right-inputs-required": -1,
                "output-context": True, "time-stride": 1, "num-heads": 1, "key-dim": -1,
                "key-scale": 0.0, "value-dim": -1, "num-left-inputs": -1, "num-right-inputs": -1,
                "dropout-proportion": 0.5}

    def derive(self):
        super().derive()
        # Kaldi sets it at the end of check_configs; `check` refuses key-dim <= 0.
        if self.config["key-scale"] == 0.0 and self.config["key-dim"] > 0:
            self.config["key-scale"] = 1.0 / math.sqrt(self.config["key-dim"])

    def check(self):
        c = self.config
        if not 0.0 <= c["self-repair-scale"] <= 1.0:
            raise self.error(f"self-repair-scale={c['self-repair-scale']} must be in [0, 1]")
        if c["target-rms"] < 0.0:
            raise self.error(f"target-rms={c['target-rms']} must not be negative")
        if c["learning-rate-factor"] <= 0.0:
            raise self.error(f"learning-rate-factor={c['learning-rate-factor']} must be positive")
        for key in ("value-dim", "key-dim", "num-left-inputs", "num-right-inputs"):
            if c[key] < 0:
                raise self.error(f"{key}= must be given and not negative")
        if c["key-dim"] == 0:
            raise self.error("key-dim must be positive")

    @property
    def components(self) -> list[str]:
        return self.layer_type.split("-")[:-1]

    def _context_dim(self) -> int:
        return self.config["num-left-inputs"] + 1 + self.config["num-right-inputs"]

    def _attention_input_dim(self) -> int:
        c = self.config
        return c["num-heads"] * (2 * c["key-dim"] + c["value-dim"] + self._context_dim())

    def _attention_output_dim(self) -> int:
        c = self.config
        return c["num-heads"] * (c["value-dim"] + (self._context_dim() if c["output-context"] else 0))

    def outputs(self):
        return {None: (f"{self.name}.{self.components[-1]}", self._attention_output_dim())}

    def config_lines(self):
        c, name = self.config, self.name
        dim = self._attention_input_dim()
        lrf = c["learning-rate-factor"]
        lrf_option = f"learning-rate-factor={lrf}" if lrf != 1.0 else ""
        l2_option = f"l2-regularize={c['l2-regularize']} " if c["l2-regularize"] != 0.0 else ""
        lines = [f"component name={name}.affine type=NaturalGradientAffineComponent "
                 f"input-dim={self.input.dim} output-dim={dim} max-change={c['max-change']} "
                 f"{c['ng-affine-options']} {lrf_option} {l2_option}",
                 f"component-node name={name}.affine component={name}.affine input={self.input.final}"]
        node = f"{name}.affine"
        for kind in self.components:
            if kind == "attention":
                line = self._attention_component()
                dim = self._attention_output_dim()
            elif kind == "relu":
                line = f"type=RectifiedLinearComponent dim={dim} self-repair-scale={c['self-repair-scale']}"
            elif kind == "renorm":
                line = f"type=NormalizeComponent dim={dim} target-rms={c['target-rms']}"
            else:
                line = f"type=BatchNormComponent dim={dim} target-rms={c['target-rms']}"
            lines += [f"component name={name}.{kind} {line}",
                      f"component-node name={name}.{kind} component={name}.{kind} input={node}"]
            node = f"{name}.{kind}"
        return ref_and_final(lines)

    def _attention_component(self) -> str:
        """The options in Kaldi's order; output-context is printed as Python prints a bool."""
        keys = ("value-dim", "key-dim", "num-left-inputs", "num-right-inputs", "num-left-inputs-required",
                "num-right-inputs-required", "output-context", "time-stride", "num-heads", "key-scale")
        return "type=RestrictedAttentionComponent " + " ".join(f"{k}={self.config[k]}" for k in keys)
