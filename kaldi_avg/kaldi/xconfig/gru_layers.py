"""GRU layers (Kaldi's `xconfig/gru.py`; docs/kaldi-formats.md 5.12). `gru-layer` and
`pgru-layer` (without and with output projection) and the output-gate projected `opgru-layer`
are built from basic components; their `fast-` variants compute the cell update in one
GruNonlinearityComponent or OutputGruNonlinearityComponent (4.20). The `norm-` variants of the
projected layers renormalize the recurrence, batch-normalize the output and may drop out the
gates. Lines, comment lines and stray blanks included, follow Kaldi's generator character for
character.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from .layer import XconfigLayer, ref_and_final

_FAST_DEFAULTS = {"gru-nonlinearity-options": " max-change=0.75"}


class _GruLayer(XconfigLayer):
    """Options, checks and lines shared by all GRU layers: the cell, the recurrence delay and
    its BackpropTruncationComponent, the gate nonlinearities and (norm- variants) the optional
    dropout on the gates. Without projection the recurrence is the whole cell."""
    output_node: ClassVar[str]
    # pgru's gates differ in dim, so each has its own dropout; opgru shares one.
    per_gate_dropout: ClassVar[bool] = False
    one_minus_z_comment: ClassVar[tuple[str, ...]] = ()
    # y_{t+delay} in the update: the output itself (gru-layer) or the cell (projected layers).
    previous_cell: ClassVar[str] = "y_t"

    def defaults(self):
        return {"input": "[-1]", "cell-dim": -1, "clipping-threshold": 30.0, "delay": -1,
                "ng-per-element-scale-options": " max-change=0.75",
                "ng-affine-options": " max-change=0.75 ",
                "self-repair-scale-nonlinearity": 0.00001, "zeroing-interval": 20,
                "zeroing-threshold": 15.0}

    def dropout_defaults(self) -> dict[str, object]:
        return {"dropout-proportion": -1.0, "dropout-per-frame": True}

    def derive(self):
        if self.config["cell-dim"] <= 0:
            self.config["cell-dim"] = self.input.dim

    def check(self):
        c = self.config
        if c["cell-dim"] <= 0:
            raise self.error(f"cell-dim has invalid value {c['cell-dim']}")
        if c["delay"] == 0:
            raise self.error("delay cannot be zero")
        if not 0.0 <= c["self-repair-scale-nonlinearity"] <= 1.0:
            raise self.error("self-repair-scale-nonlinearity must be in [0, 1]")
        p = c.get("dropout-proportion", -1.0)
        if p != -1.0 and not 0.0 <= p <= 1.0:
            raise self.error(f"dropout-proportion={p} must be in [0, 1] (or -1 for none)")

    @property
    def dims(self) -> tuple[int, int, int]:
        """(cell, recurrent projection, non-recurrent projection)."""
        C = self.config["cell-dim"]
        return C, C, 0

    def gate_dim(self, gate: str) -> int:
        """The reset gate acts on the recurrence, every other gate on the cell."""
        return self.dims[1] if gate == "r" else self.dims[0]

    def outputs(self):
        _, R, P = self.dims
        return {None: (f"{self.name}.{self.output_node}", R + P)}

    @property
    def dropout(self) -> bool:
        return self.config.get("dropout-proportion", -1.0) != -1.0

    def nonlinearity(self, gate: str, kind: str) -> str:
        repair = self.config["self-repair-scale-nonlinearity"]
        return (f"component name={self.name}.{gate} type={kind}Component "
                f"dim={self.gate_dim(gate)} self-repair-scale={repair:.10f}")

    def dropout_name(self, gate: str) -> str:
        return f"dropout_{gate}" if self.per_gate_dropout else "dropout"

    def dropout_components(self) -> list[str]:
        c = self.config
        per_frame = "true" if c["dropout-per-frame"] else "false"
        return [f"component name={self.name}.{self.dropout_name(gate)} type=DropoutComponent "
                f"dim={self.gate_dim(gate)} dropout-proportion={c['dropout-proportion']} "
                f"dropout-per-frame={per_frame}"
                for gate in (("z", "r") if self.per_gate_dropout else ("z",))]

    def gate_nodes(self, gate: str, affine: str, predrop: str | None = None) -> list[str]:
        """`L.{gate}_t` = sigmoid(affine([input, s_{t+delay}])), through the dropout if any;
        `predrop` is Kaldi's name of the node before the dropout (it differs between layers)."""
        n, d = self.name, self.config["delay"]
        predrop = predrop or f"{gate}_predrop_t"
        lines = [f"# {gate}_t",
                 f"component-node name={n}.{gate}_t_pre component={n}.{affine} input=Append("
                 f"{self.input.final}, IfDefined(Offset({n}.s_t, {d})))"]
        if self.dropout:
            return lines + [
                f"component-node name={n}.{predrop} component={n}.{gate} input={n}.{gate}_t_pre",
                f"component-node name={n}.{gate}_t component={n}.{self.dropout_name(gate)} "
                f"input={n}.{predrop}"]
        return lines + [f"component-node name={n}.{gate}_t component={n}.{gate} "
                        f"input={n}.{gate}_t_pre"]

    def update_nodes(self) -> list[str]:
        """`L.y_t` = (1 - z_t) (.) h_t + z_t (.) y_{t+delay}."""
        n, d, C = self.name, self.config["delay"], self.dims[0]
        return [*self.one_minus_z_comment,
                f"component-node name={n}.y1_t component={n}.y1 input=Append({n}.h_t, "
                f"Sum(Scale(-1.0,{n}.z_t), Const(1.0, {C})))",
                f"component-node name={n}.y2_t component={n}.y2 input=Append("
                f"IfDefined(Offset({n}.{self.previous_cell}, {d})), {n}.z_t)",
                f"component-node name={n}.y_t component={n}.y input=Sum({n}.y1_t, {n}.y2_t)"]

    def reset_gate_cell(self) -> list[str]:
        """gru/pgru from basic components up to `L.y_t`: z_t, r_t gates, h_t = tanh(W_h
        [input, r_t (.) s_{t+delay}]) and the update."""
        n, d = self.name, self.config["delay"]
        C, R, _ = self.dims
        in_dim = self.input.dim
        lines = ["# Update gate control : W_z* matrics", self.affine("W_z.xs_z", in_dim + R, C),
                 "# Reset gate control : W_r* matrics", self.affine("W_z.xs_r", in_dim + R, R),
                 "# h related matrix : W_h* matrics", self.affine("W_h.UW", in_dim + R, C)]
        if self.dropout:
            lines += self.dropout_components()
        return lines + [
            "# Defining the non-linearities", self.nonlinearity("z", "Sigmoid"),
            self.nonlinearity("r", "Sigmoid"), self.nonlinearity("h", "Tanh"),
            "# Defining the components for other cell computations",
            f"component name={n}.h1 type=ElementwiseProductComponent input-dim={2 * R} "
            f"output-dim={R}",
            *(f"component name={n}.{p} type=ElementwiseProductComponent input-dim={2 * C} "
              f"output-dim={C}" for p in ("y1", "y2")),
            f"component name={n}.y type=NoOpComponent dim={C}",
            *self.gate_nodes("z", "W_z.xs_z"), *self.gate_nodes("r", "W_z.xs_r"),
            "# h_t",
            f"component-node name={n}.h1_t component={n}.h1 input=Append({n}.r_t, "
            f"IfDefined(Offset({n}.s_t, {d})))",
            f"component-node name={n}.h_t_pre component={n}.W_h.UW input=Append("
            f"{self.input.final}, {n}.h1_t)",
            f"component-node name={n}.h_t component={n}.h input={n}.h_t_pre",
            *self.update_nodes()]

    def fused_cell(self, component: str, inputs: list[str]) -> list[str]:
        """The fast layers' `L.gru_nonlin` (`component`: type and dims) on Append(inputs)."""
        n = self.name
        return [f"component name={n}.gru_nonlin type={component} "
                f"{self.config['gru-nonlinearity-options']}",
                f"component-node name={n}.gru_nonlin_t component={n}.gru_nonlin "
                f"input=Append({', '.join(inputs)})"]

    def truncation(self) -> str:
        """`L.s_r`, the BackpropTruncationComponent of the recurrence."""
        c = self.config
        return (f"component name={self.name}.s_r type=BackpropTruncationComponent "
                f"dim={self.dims[1]} clipping-threshold={c['clipping-threshold']} "
                f"zeroing-threshold={c['zeroing-threshold']} "
                f"zeroing-interval={c['zeroing-interval']} recurrence-interval={abs(c['delay'])}")

    def affine(self, name: str, input_dim: int, output_dim: int) -> str:
        """A NaturalGradientAffineComponent line; norm-opgru appends its l2-regularize."""
        options = self.config["ng-affine-options"]
        if "l2-regularize" in self.config:
            l2 = self.config["l2-regularize"]
            options += " " + (f"l2-regularize={l2} " if l2 != 0.0 else "")
        return (f"component name={self.name}.{name} type=NaturalGradientAffineComponent "
                f"input-dim={input_dim} output-dim={output_dim} {options}")

    def per_element_scale_options(self) -> str:
        options = self.config["ng-per-element-scale-options"]
        if "param-mean" not in options and "param-stddev" not in options:
            options += " param-mean=0.0 param-stddev=1.0 "
        return options


class GruLayer(_GruLayer):
    """GRU from basic components; output and recurrence `L.s_t` = truncated y_t."""
    layer_types = ("gru-layer",)
    output_node = "s_t"
    previous_cell = "s_t"
    one_minus_z_comment = ("# y_t", "# The following two lines are to implement (1 - z_t)")

    def config_lines(self):
        n = self.name
        return ref_and_final(self.reset_gate_cell() + [
            "# s_t : recurrence", self.truncation(), "# s_t will be output and recurrence",
            f"component-node name={n}.s_t component={n}.s_r input={n}.y_t"])


class FastGruLayer(_GruLayer):
    """gru with the cell update in one GruNonlinearityComponent on [z_t, r_t, hpart_t,
    y_{t+delay}]; output `L.y_t`, recurrence `L.s_t` = truncated y_t."""
    layer_types = ("fast-gru-layer",)
    output_node = "y_t"

    def defaults(self):
        return {**super().defaults(), **_FAST_DEFAULTS}

    def config_lines(self):
        n, d, C = self.name, self.config["delay"], self.dims[0]
        in_dim = self.input.dim
        return ref_and_final([
            f"### Begin Gru layer '{n}'",
            "# Update gate control : W_z* matrices", self.affine("W_z.xh", in_dim + C, C),
            "# Reset gate control : W_r* matrices", self.affine("W_r.xh", in_dim + C, C),
            "# hpart_t related matrix : W_hpart matrice", self.affine("W_hpart.x", in_dim, C),
            "# Defining the non-linearities for z_t and r_t", self.nonlinearity("z", "Sigmoid"),
            self.nonlinearity("r", "Sigmoid"),
            *self.gate_nodes("z", "W_z.xh"), *self.gate_nodes("r", "W_r.xh"),
            "# hpart_t",
            f"component-node name={n}.hpart_t component={n}.W_hpart.x input={self.input.final}",
            "# y_t",
            "# Note: the output of GruNonlinearityComponent is (h_t, c_t), we just get the second "
            "half. Otherwise, in non-projection gru layer, y_t = c_t",
            *self.fused_cell(f"GruNonlinearityComponent cell-dim={C}",
                             [f"{n}.z_t", f"{n}.r_t", f"{n}.hpart_t",
                              f"IfDefined(Offset({n}.s_t, {d}))"]),
            f"dim-range-node name={n}.y_t input-node={n}.gru_nonlin_t dim-offset={C} dim={C}",
            "# s_t : recurrence",
            "# Note: in non-projection gru layer, the recurrent part equals the output, namely y_t.",
            self.truncation(),
            f"component-node name={n}.s_t component={n}.s_r input={n}.y_t"])


class _ProjectedGruLayer(_GruLayer):
    """Adds the recurrent (R) and non-recurrent (P) projections of the cell: the output has
    R + P dims, the recurrence `L.s_t` its first R."""

    def defaults(self):
        return {**super().defaults(), "recurrent-projection-dim": -1,
                "non-recurrent-projection-dim": -1,
                "ng-per-element-scale-options": " max-change=0.75 "}

    def derive(self):
        # Unlike gru-layer, Kaldi does not default cell-dim to the input dim here.
        c = self.config
        if c["non-recurrent-projection-dim"] <= 0:
            c["non-recurrent-projection-dim"] = c["recurrent-projection-dim"]

    def check(self):
        c = self.config
        if c["recurrent-projection-dim"] <= 0:
            # Kaldi's default cell-dim/4 is a float under Python 3 ("input-dim=56.0"), which
            # nnet3-init rejects (docs/kaldi-formats.md pitfall 22), so it must be explicit.
            raise self.error("recurrent-projection-dim= must be given as a positive integer "
                             "(Kaldi's default cell-dim/4 is fractional under Python 3 and "
                             "nnet3-init rejects it)")
        super().check()
        if c["non-recurrent-projection-dim"] <= 0:
            raise self.error(f"non-recurrent-projection-dim has invalid value "
                             f"{c['non-recurrent-projection-dim']}")
        if c["recurrent-projection-dim"] + c["non-recurrent-projection-dim"] > c["cell-dim"]:
            raise self.error("recurrent+non-recurrent projection dim exceeds cell dim")

    @property
    def dims(self) -> tuple[int, int, int]:
        c = self.config
        return c["cell-dim"], c["recurrent-projection-dim"], c["non-recurrent-projection-dim"]

    def projection_components(self) -> list[str]:
        C, R, P = self.dims
        return ["# s_t recurrent", self.affine("W_s.ys", C, R + P), self.truncation()]

    def norm_components(self) -> list[str]:
        n, R, P = self.name, self.dims[1], self.dims[2]
        return [f"component name={n}.batchnorm type=BatchNormComponent dim={R + P} target-rms=1.0",
                f"component name={n}.renorm type=NormalizeComponent dim={R} target-rms=1.0"]

    def projection_lines(self, source: str) -> list[str]:
        """Output `L.sn_t` = W_s.ys source, recurrence `L.s_t` on its first R dims."""
        n, R = self.name, self.dims[1]
        return [*self.projection_components(),
                "# s_t and n_t : sn_t will be the output",
                f"component-node name={n}.sn_t component={n}.W_s.ys input={source}",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.sn_t dim-offset=0 dim={R}",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip"]


class PgruLayer(_ProjectedGruLayer):
    """gru-layer with the cell y_t projected to `L.sn_t` (the output); the reset gate and the
    recurrence act on its first R dims."""
    layer_types = ("pgru-layer",)
    output_node = "sn_t"

    def config_lines(self):
        return ref_and_final(self.reset_gate_cell() + self.projection_lines(f"{self.name}.y_t"))


class NormPgruLayer(PgruLayer):
    """pgru with `L.sn_t` = BatchNorm(projection), the recurrence renormalized (Normalize)
    before truncation, and optional gate dropout."""
    layer_types = ("norm-pgru-layer",)
    per_gate_dropout = True

    def defaults(self):
        return {**super().defaults(), **self.dropout_defaults()}

    def projection_lines(self, source: str) -> list[str]:
        n, R = self.name, self.dims[1]
        return [*self.projection_components(), *self.norm_components(),
                "# s_t and n_t : sn_t will be the output",
                f"component-node name={n}.sn_nobatchnorm_t component={n}.W_s.ys input={source}",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.sn_nobatchnorm_t "
                f"dim-offset=0 dim={R}",
                f"component-node name={n}.sn_t component={n}.batchnorm input={n}.sn_nobatchnorm_t",
                f"component-node name={n}.s_renorm_t component={n}.renorm input={n}.s_t_preclip",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_renorm_t"]


class OpgruLayer(_ProjectedGruLayer):
    """Output-gate projected GRU from basic components: z_t, o_t gates, h_t from the input and
    w (.) y_{t+delay}, the cell y_t, the projection `L.sn_t` of o_t (.) y_t (the output), the
    recurrence on its first R dims `L.s_t` and on the cell."""
    layer_types = ("opgru-layer",)
    output_node = "sn_t"

    def config_lines(self):
        n, d = self.name, self.config["delay"]
        C, R, _ = self.dims
        in_dim = self.input.dim
        y_prev = f"IfDefined(Offset({n}.y_t, {d}))"
        lines = ["# Update gate control : W_z* matrics", self.affine("W_z.xs_z", in_dim + R, C),
                 "# Output gate control : W_r* matrics", self.affine("W_z.xs_o", in_dim + R, C),
                 "# h related matrix : W_h* matrics", self.affine("W_h.UW", in_dim, C),
                 f"component name={n}.W_h.UW_elementwise type=NaturalGradientPerElementScaleComponent "
                 f"dim={C} {self.per_element_scale_options()}",
                 "# Defining the non-linearities", self.nonlinearity("z", "Sigmoid"),
                 self.nonlinearity("o", "Sigmoid"), self.nonlinearity("h", "Tanh"),
                 "# Defining the components for other cell computations",
                 *(f"component name={n}.{p} type=ElementwiseProductComponent input-dim={2 * C} "
                   f"output-dim={C}" for p in ("o1", "y1", "y2")),
                 f"component name={n}.y type=NoOpComponent dim={C}"]
        if self.dropout:
            lines += self.dropout_components()
        lines += [*self.gate_nodes("z", "W_z.xs_z"), *self.gate_nodes("o", "W_z.xs_o"),
                  "# h_t",
                  f"component-node name={n}.h_t_pre component={n}.W_h.UW input={self.input.final}",
                  f"component-node name={n}.h_t_pre2 component={n}.W_h.UW_elementwise input={y_prev}",
                  f"component-node name={n}.h_t component={n}.h input=Sum({n}.h_t_pre, {n}.h_t_pre2)",
                  *self.update_nodes(),
                  f"component-node name={n}.y_o_t component={n}.o1 input=Append({n}.o_t, {n}.y_t)"]
        return ref_and_final(lines + self.projection_lines(f"{n}.y_o_t"))


class NormOpgruLayer(OpgruLayer):
    """opgru with `L.sn_t` = BatchNorm(projection), the recurrence renormalized (Normalize)
    before truncation, optional gate dropout and l2-regularize."""
    layer_types = ("norm-opgru-layer",)
    one_minus_z_comment = ("# The following two lines are to implement (1 - z_t)",)

    def defaults(self):
        return {**super().defaults(), **self.dropout_defaults(), "l2-regularize": 0.0}

    def projection_lines(self, source: str) -> list[str]:
        n, R = self.name, self.dims[1]
        return [*self.projection_components(), *self.norm_components(),
                "# s_t and n_t : sn_t will be the output",
                f"component-node name={n}.sn_nobatchnorm_t component={n}.W_s.ys input={source}",
                f"component-node name={n}.sn_t component={n}.batchnorm input={n}.sn_nobatchnorm_t",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.sn_nobatchnorm_t "
                f"dim-offset=0 dim={R}",
                f"component-node name={n}.s_t_preclip_renorm component={n}.renorm "
                f"input={n}.s_t_preclip",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip_renorm"]


class _FastProjectedGruLayer(_ProjectedGruLayer):
    """fast-pgru / fast-opgru: gates z_t and `second_gate` on [input, s_{t+delay}], the fused
    cell c_t, its projection `L.y_t` (the output) and the recurrence on its first R dims."""
    output_node = "y_t"
    second_gate: ClassVar[str]
    normalized = False   # the norm- variants name the projection y_t_tmp

    def defaults(self):
        return {**super().defaults(), **_FAST_DEFAULTS}

    def config_lines(self):
        n, g = self.name, self.second_gate
        C, R, _ = self.dims
        in_dim = self.input.dim
        projection = "y_t_tmp" if self.normalized else "y_t"
        lines = [f"### Begin Gru layer '{n}'",
                 "# Update gate control : W_z* matrices", self.affine("W_z.xs", in_dim + R, C),
                 f"# Reset gate control : W_{g}* matrices",
                 self.affine(f"W_{g}.xs", in_dim + R, self.gate_dim(g)),
                 "# hpart_t related matrix : W_hpart matric", self.affine("W_hpart.x", in_dim, C),
                 "# Defining the non-linearities", self.nonlinearity("z", "Sigmoid"),
                 self.nonlinearity(g, "Sigmoid")]
        if self.dropout:
            lines += ["# Defining the dropout component", *self.dropout_components()]
        lines += [*self.gate_lines(),
                  "# hpart_t",
                  f"component-node name={n}.hpart_t component={n}.W_hpart.x input={self.input.final}",
                  "# c_t",
                  *self.cell_lines(),
                  f"dim-range-node name={n}.c_t input-node={n}.gru_nonlin_t dim-offset={C} dim={C}",
                  *self.output_projection(projection)]
        return ref_and_final(lines + self.recurrence_lines())

    def gate_lines(self) -> list[str]:
        n, d, g = self.name, self.config["delay"], self.second_gate
        previous = f"IfDefined(Offset({n}.s_t, {d}))"
        return [f"# z_t and {g}_t",
                *(line for gate in ("z", g) for line in (
                    f"component-node name={n}.{gate}_t_pre component={n}.W_{gate}.xs "
                    f"input=Append({self.input.final}, {previous})",
                    f"component-node name={n}.{gate}_t component={n}.{gate} "
                    f"input={n}.{gate}_t_pre"))]

    @abstractmethod
    def cell_lines(self) -> list[str]:
        """The note and the fused cell component and node."""

    @abstractmethod
    def output_projection(self, projection: str) -> list[str]:
        """The components and nodes from c_t to `L.{projection}`."""

    @abstractmethod
    def recurrence_lines(self) -> list[str]:
        """`L.s_t` (and for the norm- variants the output) from the projection."""


class FastPgruLayer(_FastProjectedGruLayer):
    """pgru with (h_t, c_t) from one GruNonlinearityComponent on [z_t, r_t, hpart_t,
    c_{t+delay}, s_{t+delay}]; output `L.y_t` = W_y c_t."""
    layer_types = ("fast-pgru-layer",)
    second_gate = "r"

    def cell_lines(self) -> list[str]:
        n, d = self.name, self.config["delay"]
        C, R, _ = self.dims
        return ["# Note: the output of GruNonlinearityComponent is (h_t, c_t), we use the second "
                "half.",
                *self.fused_cell(f"GruNonlinearityComponent cell-dim={C} recurrent-dim={R}",
                                 [f"{n}.z_t", f"{n}.r_t", f"{n}.hpart_t",
                                  f"IfDefined(Offset({n}.c_t, {d}))",
                                  f"IfDefined(Offset({n}.s_t, {d}))"])]

    def output_projection(self, projection: str) -> list[str]:
        n, (C, R, P) = self.name, self.dims
        return [f"# the projected matrix W_y.c and {projection}", self.affine("W_y.c", C, R + P),
                f"component-node name={n}.{projection} component={n}.W_y.c input={n}.c_t"]

    def recurrence_lines(self) -> list[str]:
        n, R = self.name, self.dims[1]
        return ["# s_t : recurrence", self.truncation(),
                f"dim-range-node name={n}.s_t_pre input-node={n}.y_t dim-offset=0 dim={R}",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_pre"]


class FastOpgruLayer(_FastProjectedGruLayer):
    """opgru with the cell update (h_t, c_t) in one OutputGruNonlinearityComponent on
    [z_t, hpart_t, c_{t+delay}]; output `L.y_t` = W_y (c_t (.) o_t), recurrence on its first R
    dims `L.s_t` and on the cell `L.c_t`."""
    layer_types = ("fast-opgru-layer",)
    second_gate = "o"

    def cell_lines(self) -> list[str]:
        n, d, C = self.name, self.config["delay"], self.dims[0]
        return ["# Note: the output of OutputGruNonlinearityComponent is (h_t, c_t), we use the "
                "second half.",
                *self.fused_cell(f"OutputGruNonlinearityComponent cell-dim={C}",
                                 [f"{n}.z_t", f"{n}.hpart_t", f"IfDefined(Offset({n}.c_t, {d}))"])]

    def output_projection(self, projection: str) -> list[str]:
        n, (C, R, P) = self.name, self.dims
        return [f"# the projected matrix W_y.cdoto and {projection}",
                f"component name={n}.cdoto type=ElementwiseProductComponent input-dim={2 * C} "
                f"output-dim={C}",
                f"component-node name={n}.cdoto component={n}.cdoto input=Append({n}.c_t, {n}.o_t)",
                self.affine("W_y.cdoto", C, R + P),
                f"component-node name={n}.{projection} component={n}.W_y.cdoto input={n}.cdoto"]

    def recurrence_lines(self) -> list[str]:
        n, R = self.name, self.dims[1]
        return ["# s_t recurrence", self.truncation(),
                f"dim-range-node name={n}.s_t_preclip input-node={n}.y_t dim-offset=0 dim={R}",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip"]


class _FastNormMixin:
    """The fast-norm- variants: `L.y_t` = BatchNorm(projection `L.y_t_tmp`), the recurrence
    renormalized before truncation, and optional gate dropout."""
    normalized = True

    def defaults(self):
        return {**super().defaults(), **self.dropout_defaults()}

    def gate_lines(self) -> list[str]:
        return [*self.gate_nodes("z", "W_z.xs", "z_t_predrop"),
                *self.gate_nodes(self.second_gate, f"W_{self.second_gate}.xs",
                                 f"{self.second_gate}_t_predrop")]

    def recurrence_lines(self) -> list[str]:
        n, R, P = self.name, self.dims[1], self.dims[2]
        return ["# s_t : recurrence",
                f"component name={n}.renorm type=NormalizeComponent dim={R} target-rms=1.0",
                self.truncation(),
                f"dim-range-node name={n}.s_t_pre input-node={n}.y_t_tmp dim-offset=0 dim={R}",
                f"component-node name={n}.s_t_renorm component={n}.renorm input={n}.s_t_pre",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_renorm",
                "# y_t : output",
                f"component name={n}.batchnorm type=BatchNormComponent dim={R + P} target-rms=1.0",
                f"component-node name={n}.y_t component={n}.batchnorm input={n}.y_t_tmp"]


class FastNormPgruLayer(_FastNormMixin, FastPgruLayer):
    """fast-pgru, normalized as above, with one dropout per gate."""
    layer_types = ("fast-norm-pgru-layer",)
    per_gate_dropout = True


class FastNormOpgruLayer(_FastNormMixin, FastOpgruLayer):
    """fast-opgru, normalized as above."""
    layer_types = ("fast-norm-opgru-layer",)


GRU_LAYER_CLASSES = (GruLayer, FastGruLayer, PgruLayer, NormPgruLayer, FastPgruLayer,
                     FastNormPgruLayer, OpgruLayer, NormOpgruLayer, FastOpgruLayer,
                     FastNormOpgruLayer)
