"""Single-component xconfig lines: `batchnorm-component`, `no-op-component`,
`linear-component` (Kaldi's `xconfig/trivial_layers.py`: XconfigBatchnormComponent,
XconfigNoOpComponent, XconfigLinearComponent; docs/kaldi-formats.md 4.6, 4.10, 4.11, 5.4).
Each is one component and one component-node named after the layer."""
from __future__ import annotations

from .layer import XconfigLayer, pass_through, ref_and_final


class _SingleComponent(XconfigLayer):
    def outputs(self):
        return {None: (self.name, self.output_dim_of_layer())}

    def output_dim_of_layer(self) -> int:
        return self.input.dim

    def derive(self):
        pass

    def node_line(self) -> str:
        return f"component-node name={self.name} component={self.name} input={self.input.final}"


class BatchnormComponentLayer(_SingleComponent):
    """BatchNormComponent over the input's dim; include-in-init also puts it in init.config
    (for a batchnorm before an LDA fixed-affine-layer)."""
    layer_types = ("batchnorm-component",)

    def defaults(self):
        return {"input": "[-1]", "target-rms": 1.0, "include-in-init": False}

    def check(self):
        if self.config["target-rms"] <= 0.0:
            raise self.error("target-rms must be positive")

    def config_lines(self):
        lines = [f"component name={self.name} type=BatchNormComponent dim={self.input.dim} "
                 f"target-rms={self.config['target-rms']}", self.node_line()]
        bases = ("ref", "final", "init") if self.config["include-in-init"] else ("ref", "final")
        return [(basename, line) for line in lines for basename in bases]


class NoOpComponentLayer(_SingleComponent):
    """NoOpComponent: a named copy of a descriptor's value (e.g. to cache a Sum)."""
    layer_types = ("no-op-component",)

    def defaults(self):
        return {"input": "[-1]"}

    def config_lines(self):
        return ref_and_final([f"component name={self.name} type=NoOpComponent dim={self.input.dim}",
                              self.node_line()])


class LinearComponentLayer(_SingleComponent):
    """LinearComponent to dim=; the other options pass through only when set (max-change has
    Kaldi's default 0.75)."""
    layer_types = ("linear-component",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "orthonormal-constraint": "", "max-change": 0.75,
                "l2-regularize": "", "param-stddev": "", "learning-rate-factor": ""}

    def check(self):
        if self.config["dim"] <= 0:
            raise self.error("dim= must be given and positive")

    def output_dim_of_layer(self) -> int:
        return self.config["dim"]

    def config_lines(self):
        options = pass_through("", self.config, ("orthonormal-constraint", "max-change", "l2-regularize",
                                                 "param-stddev", "learning-rate-factor"))
        return ref_and_final([f"component name={self.name} type=LinearComponent "
                              f"input-dim={self.input.dim} output-dim={self.config['dim']} {options}",
                              self.node_line()])
