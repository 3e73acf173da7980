"""GRU layers (Kaldi's `xconfig/gru.py`; docs/kaldi-formats.md 5.12): the output-gate projected
GRUs of the TDNN-OPGRU recipes, `opgru-layer` and `norm-opgru-layer` (built from basic
components), `fast-opgru-layer` and `fast-norm-opgru-layer` (the cell update in one
OutputGruNonlinearityComponent); the `norm-` variants renormalize the recurrence, batch-normalize
the output and may drop out the gates. Lines, comment lines and stray blanks included, follow
Kaldi's generator character for character.
"""
from __future__ import annotations

from .layer import XconfigLayer, ref_and_final


class _ProjectedGruLayer(XconfigLayer):
    """Options and checks shared by the projected GRU layers: the cell, the recurrent and
    non-recurrent projections, the recurrence delay and its BackpropTruncationComponent, and
    (norm- variants) the optional dropout on the gates."""

    def defaults(self):
        return {"input": "[-1]", "cell-dim": -1, "recurrent-projection-dim": -1,
                "non-recurrent-projection-dim": -1, "clipping-threshold": 30.0, "delay": -1,
                "ng-per-element-scale-options": " max-change=0.75 ",
                "ng-affine-options": " max-change=0.75 ",
                "self-repair-scale-nonlinearity": 0.00001, "zeroing-interval": 20,
                "zeroing-threshold": 15.0}

    def dropout_defaults(self) -> dict[str, object]:
        return {"dropout-proportion": -1.0, "dropout-per-frame": True}

    def derive(self):
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
        for key in ("cell-dim", "non-recurrent-projection-dim"):
            if c[key] <= 0:
                raise self.error(f"{key} has invalid value {c[key]}")
        if c["delay"] == 0:
            raise self.error("delay cannot be zero")
        if c["recurrent-projection-dim"] + c["non-recurrent-projection-dim"] > c["cell-dim"]:
            raise self.error("recurrent+non-recurrent projection dim exceeds cell dim")
        if not 0.0 <= c["self-repair-scale-nonlinearity"] <= 1.0:
            raise self.error("self-repair-scale-nonlinearity must be in [0, 1]")
        p = c.get("dropout-proportion", -1.0)
        if p != -1.0 and not 0.0 <= p <= 1.0:
            raise self.error(f"dropout-proportion={p} must be in [0, 1] (or -1 for none)")

    @property
    def dims(self) -> tuple[int, int, int]:
        """(cell, recurrent projection, non-recurrent projection)."""
        c = self.config
        return c["cell-dim"], c["recurrent-projection-dim"], c["non-recurrent-projection-dim"]

    @property
    def dropout(self) -> bool:
        return self.config.get("dropout-proportion", -1.0) != -1.0

    def nonlinearity(self, gate: str, kind: str) -> str:
        repair = self.config["self-repair-scale-nonlinearity"]
        return (f"component name={self.name}.{gate} type={kind}Component dim={self.dims[0]} "
                f"self-repair-scale={repair:.10f}")

    def dropout_component(self) -> str:
        c = self.config
        per_frame = "true" if c["dropout-per-frame"] else "false"
        return (f"component name={self.name}.dropout type=DropoutComponent dim={self.dims[0]} "
                f"dropout-proportion={c['dropout-proportion']} dropout-per-frame={per_frame}")

    def gate_nodes(self, gate: str, affine: str, predrop: str) -> list[str]:
        """`L.{gate}_t` = sigmoid(affine([input, s_{t+delay}])), through the dropout if any;
        `predrop` is Kaldi's name of the node before the dropout (it differs between layers)."""
        n, d = self.name, self.config["delay"]
        lines = [f"# {gate}_t",
                 f"component-node name={n}.{gate}_t_pre component={n}.{affine} input=Append("
                 f"{self.input.final}, IfDefined(Offset({n}.s_t, {d})))"]
        if self.dropout:
            return lines + [
                f"component-node name={n}.{predrop} component={n}.{gate} input={n}.{gate}_t_pre",
                f"component-node name={n}.{gate}_t component={n}.dropout input={n}.{predrop}"]
        return lines + [f"component-node name={n}.{gate}_t component={n}.{gate} "
                        f"input={n}.{gate}_t_pre"]

    def truncation_options(self) -> str:
        c = self.config
        return (f"clipping-threshold={c['clipping-threshold']} "
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


class OpgruLayer(_ProjectedGruLayer):
    """Output-gate projected GRU from basic components: z_t, o_t gates, h_t from the input and
    w (.) y_{t+delay}, the cell y_t, the projection `L.sn_t` of o_t (.) y_t (the output), the
    recurrence on its first R dims `L.s_t` and on the cell."""
    layer_types = ("opgru-layer",)
    one_minus_z_comment: tuple[str, ...] = ()

    def outputs(self):
        _, R, P = self.dims
        return {None: (f"{self.name}.sn_t", R + P)}

    def config_lines(self):
        n, d = self.name, self.config["delay"]
        C, R, P = self.dims
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
            lines.append(self.dropout_component())
        lines += [*self.gate_nodes("z", "W_z.xs_z", "z_predrop_t"),
                  *self.gate_nodes("o", "W_z.xs_o", "o_predrop_t"),
                  "# h_t",
                  f"component-node name={n}.h_t_pre component={n}.W_h.UW input={self.input.final}",
                  f"component-node name={n}.h_t_pre2 component={n}.W_h.UW_elementwise input={y_prev}",
                  f"component-node name={n}.h_t component={n}.h input=Sum({n}.h_t_pre, {n}.h_t_pre2)",
                  *self.one_minus_z_comment,
                  f"component-node name={n}.y1_t component={n}.y1 input=Append({n}.h_t, "
                  f"Sum(Scale(-1.0,{n}.z_t), Const(1.0, {C})))",
                  f"component-node name={n}.y2_t component={n}.y2 input=Append({y_prev}, {n}.z_t)",
                  f"component-node name={n}.y_t component={n}.y input=Sum({n}.y1_t, {n}.y2_t)",
                  f"component-node name={n}.y_o_t component={n}.o1 input=Append({n}.o_t, {n}.y_t)",
                  "# s_t recurrent", self.affine("W_s.ys", C, R + P),
                  f"component name={n}.s_r type=BackpropTruncationComponent dim={R} "
                  f"{self.truncation_options()}"]
        return ref_and_final(lines + self.projection_lines())

    def projection_lines(self) -> list[str]:
        n, R = self.name, self.dims[1]
        return ["# s_t and n_t : sn_t will be the output",
                f"component-node name={n}.sn_t component={n}.W_s.ys input={n}.y_o_t",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.sn_t dim-offset=0 dim={R}",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip"]


class NormOpgruLayer(OpgruLayer):
    """opgru with `L.sn_t` = BatchNorm(projection), the recurrence renormalized (Normalize)
    before truncation, optional gate dropout and l2-regularize."""
    layer_types = ("norm-opgru-layer",)
    one_minus_z_comment = ("# The following two lines are to implement (1 - z_t)",)

    def defaults(self):
        return {**super().defaults(), **self.dropout_defaults(), "l2-regularize": 0.0}

    def projection_lines(self) -> list[str]:
        n, R, P = self.name, self.dims[1], self.dims[2]
        return [f"component name={n}.batchnorm type=BatchNormComponent dim={R + P} target-rms=1.0",
                f"component name={n}.renorm type=NormalizeComponent dim={R} target-rms=1.0",
                "# s_t and n_t : sn_t will be the output",
                f"component-node name={n}.sn_nobatchnorm_t component={n}.W_s.ys input={n}.y_o_t",
                f"component-node name={n}.sn_t component={n}.batchnorm input={n}.sn_nobatchnorm_t",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.sn_nobatchnorm_t "
                f"dim-offset=0 dim={R}",
                f"component-node name={n}.s_t_preclip_renorm component={n}.renorm "
                f"input={n}.s_t_preclip",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip_renorm"]


class FastOpgruLayer(_ProjectedGruLayer):
    """opgru with the cell update (h_t, c_t) in one OutputGruNonlinearityComponent on
    [z_t, hpart_t, c_{t+delay}]; output `L.y_t` = W_y (c_t (.) o_t), recurrence on its first R
    dims `L.s_t` and on the cell `L.c_t`."""
    layer_types = ("fast-opgru-layer",)
    normalized = False   # the norm- variant names the projection y_t_tmp

    def defaults(self):
        return {**super().defaults(), "gru-nonlinearity-options": " max-change=0.75"}

    def outputs(self):
        _, R, P = self.dims
        return {None: (f"{self.name}.y_t", R + P)}

    def config_lines(self):
        n, d = self.name, self.config["delay"]
        C, R, P = self.dims
        in_dim = self.input.dim
        projection = "y_t_tmp" if self.normalized else "y_t"
        lines = [f"### Begin Gru layer '{n}'",
                 "# Update gate control : W_z* matrices", self.affine("W_z.xs", in_dim + R, C),
                 "# Reset gate control : W_o* matrices", self.affine("W_o.xs", in_dim + R, C),
                 "# hpart_t related matrix : W_hpart matric", self.affine("W_hpart.x", in_dim, C),
                 "# Defining the non-linearities", self.nonlinearity("z", "Sigmoid"),
                 self.nonlinearity("o", "Sigmoid")]
        if self.dropout:
            lines += ["# Defining the dropout component", self.dropout_component()]
        lines += [*self.gate_lines(),
                  "# hpart_t",
                  f"component-node name={n}.hpart_t component={n}.W_hpart.x input={self.input.final}",
                  "# c_t",
                  "# Note: the output of OutputGruNonlinearityComponent is (h_t, c_t), we use the "
                  "second half.",
                  f"component name={n}.gru_nonlin type=OutputGruNonlinearityComponent cell-dim={C} "
                  f"{self.config['gru-nonlinearity-options']}",
                  f"component-node name={n}.gru_nonlin_t component={n}.gru_nonlin input=Append("
                  f"{n}.z_t, {n}.hpart_t, IfDefined(Offset({n}.c_t, {d})))",
                  f"dim-range-node name={n}.c_t input-node={n}.gru_nonlin_t dim-offset={C} dim={C}",
                  f"# the projected matrix W_y.cdoto and {projection}",
                  f"component name={n}.cdoto type=ElementwiseProductComponent input-dim={2 * C} "
                  f"output-dim={C}",
                  f"component-node name={n}.cdoto component={n}.cdoto input=Append({n}.c_t, {n}.o_t)",
                  self.affine("W_y.cdoto", C, R + P),
                  f"component-node name={n}.{projection} component={n}.W_y.cdoto input={n}.cdoto"]
        return ref_and_final(lines + self.recurrence_lines())

    def gate_lines(self) -> list[str]:
        n, d = self.name, self.config["delay"]
        previous = f"IfDefined(Offset({n}.s_t, {d}))"
        return ["# z_t and o_t",
                f"component-node name={n}.z_t_pre component={n}.W_z.xs input=Append("
                f"{self.input.final}, {previous})",
                f"component-node name={n}.z_t component={n}.z input={n}.z_t_pre",
                f"component-node name={n}.o_t_pre component={n}.W_o.xs input=Append("
                f"{self.input.final}, {previous})",
                f"component-node name={n}.o_t component={n}.o input={n}.o_t_pre"]

    def recurrence_lines(self) -> list[str]:
        n, R = self.name, self.dims[1]
        return ["# s_t recurrence",
                f"component name={n}.s_r type=BackpropTruncationComponent dim={R} "
                f"{self.truncation_options()}",
                f"dim-range-node name={n}.s_t_preclip input-node={n}.y_t dim-offset=0 dim={R}",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_preclip"]


class FastNormOpgruLayer(FastOpgruLayer):
    """fast-opgru with `L.y_t` = BatchNorm(projection `L.y_t_tmp`), the recurrence renormalized
    before truncation, and optional gate dropout."""
    layer_types = ("fast-norm-opgru-layer",)
    normalized = True

    def defaults(self):
        return {**super().defaults(), **self.dropout_defaults()}

    def gate_lines(self) -> list[str]:
        return [*self.gate_nodes("z", "W_z.xs", "z_t_predrop"),
                *self.gate_nodes("o", "W_o.xs", "o_t_predrop")]

    def recurrence_lines(self) -> list[str]:
        n, R, P = self.name, self.dims[1], self.dims[2]
        return ["# s_t : recurrence",
                f"component name={n}.renorm type=NormalizeComponent dim={R} target-rms=1.0",
                f"component name={n}.s_r type=BackpropTruncationComponent dim={R} "
                f"{self.truncation_options()}",
                f"dim-range-node name={n}.s_t_pre input-node={n}.y_t_tmp dim-offset=0 dim={R}",
                f"component-node name={n}.s_t_renorm component={n}.renorm input={n}.s_t_pre",
                f"component-node name={n}.s_t component={n}.s_r input={n}.s_t_renorm",
                "# y_t : output",
                f"component name={n}.batchnorm type=BatchNormComponent dim={R + P} target-rms=1.0",
                f"component-node name={n}.y_t component={n}.batchnorm input={n}.y_t_tmp"]


GRU_LAYER_CLASSES = (OpgruLayer, NormOpgruLayer, FastOpgruLayer, FastNormOpgruLayer)
