"""LSTM layers (Kaldi's `xconfig/lstm.py`; docs/kaldi-formats.md 5.6-5.8): `fast-lstm-layer` and
`fast-lstmp-layer` (one LstmNonlinearityComponent), `lstm-layer` and `lstmp-layer` (separate
gate components), each with a `-batchnorm-` variant where Kaldi has one, and `lstmb-layer`
(fast-lstm with a bottlenecked gate affine; 5.12). Lines, comment lines included, follow
Kaldi's generator character for character.
"""
from __future__ import annotations

from typing import ClassVar

from .layer import XconfigLayer, ref_and_final


class _RecurrentLayer(XconfigLayer):
    """Options and checks shared by all LSTM layers: cell dim, recurrence delay, and the
    BackpropTruncationComponent options (decay-time scales the recurrence by 1-|delay|/T)."""
    cell_dim_from_input: ClassVar[bool] = True

    def defaults(self):
        return {"input": "[-1]", "cell-dim": -1, "clipping-threshold": 30.0,
                "zeroing-interval": 20, "zeroing-threshold": 15.0, "delay": -1,
                "l2-regularize": 0.0, "decay-time": -1.0}

    @property
    def batchnorm(self) -> bool:
        return "-batchnorm-" in self.layer_type

    def derive(self):
        if self.cell_dim_from_input and self.config["cell-dim"] <= 0:
            self.config["cell-dim"] = self.input.dim

    def check(self):
        if self.config["cell-dim"] <= 0:
            raise self.error("cell-dim= must be given and positive")
        if self.config["delay"] == 0:
            raise self.error("delay= must not be 0")
        if self.recurrence_scale <= 0:
            raise self.error(f"decay-time={self.config['decay-time']} must be larger than "
                             f"|delay|={abs(self.config['delay'])}")

    @property
    def recurrence_scale(self) -> float:
        decay_time = self.config["decay-time"]
        return 1.0 if decay_time < 0 else 1.0 - abs(self.config["delay"]) / decay_time

    def truncation_options(self) -> str:
        c = self.config
        return (f"clipping-threshold={c['clipping-threshold']} "
                f"zeroing-threshold={c['zeroing-threshold']} "
                f"zeroing-interval={c['zeroing-interval']} "
                f"recurrence-interval={abs(c['delay'])} scale={self.recurrence_scale}")

    def l2_option(self) -> str:
        l2 = self.config["l2-regularize"]
        return f"l2-regularize={l2} " if l2 != 0.0 else ""


class _ProjectedMixin:
    """Projection dims (lstmp, fast-lstmp) and the optional dropout."""
    cell_dim_from_input = False

    def projection_defaults(self) -> dict[str, object]:
        return {"recurrent-projection-dim": -1, "non-recurrent-projection-dim": -1,
                "dropout-proportion": -1.0}

    def derive(self):
        c = self.config
        if c["non-recurrent-projection-dim"] <= 0:
            c["non-recurrent-projection-dim"] = c["recurrent-projection-dim"]

    def check(self):
        super().check()
        c = self.config
        if c["recurrent-projection-dim"] <= 0:
            # Kaldi's default cell-dim/4 is a float under Python 3 ("input-dim=56.0"), which
            # nnet3-init rejects (docs/kaldi-formats.md pitfall 22), so it must be explicit.
            raise self.error(f"recurrent-projection-dim= must be given as a positive integer "
                             f"(Kaldi's default cell-dim/4 = {c['cell-dim'] / 4} is fractional "
                             f"under Python 3 and nnet3-init rejects it)")
        if c["non-recurrent-projection-dim"] <= 0:
            raise self.error("non-recurrent-projection-dim must be positive")
        if c["recurrent-projection-dim"] + c["non-recurrent-projection-dim"] > c["cell-dim"]:
            raise self.error("recurrent-projection-dim + non-recurrent-projection-dim exceeds "
                             "cell-dim")
        p = c["dropout-proportion"]
        if p != -1.0 and not 0.0 <= p <= 1.0:
            raise self.error(f"dropout-proportion={p} must be in [0, 1] (or -1 for none)")

    @property
    def dropout(self) -> bool:
        return self.config["dropout-proportion"] != -1.0

    @property
    def projection_dims(self) -> tuple[int, int]:
        return self.config["recurrent-projection-dim"], self.config["non-recurrent-projection-dim"]


class FastLstmLayer(_RecurrentLayer):
    """W_all (4 gates in one affine) + LstmNonlinearityComponent; output `L.m`."""
    layer_types = ("fast-lstm-layer", "fast-lstm-batchnorm-layer")

    def defaults(self):
        return {**super().defaults(), "lstm-nonlinearity-options": " max-change=0.75",
                "ng-affine-options": " max-change=1.5"}

    def outputs(self):
        node = "m_batchnorm" if self.batchnorm else "m"
        return {None: (f"{self.name}.{node}", self.config["cell-dim"])}

    def config_lines(self):
        n, C, d = self.name, self.config["cell-dim"], self.config["delay"]
        lines = [f"### Begin LSTM layer '{n}'",
                 *_fused_gates(self, recurrent_dim=C),
                 *self.nonlinearity_components(),
                 "###  Nodes for the components above.",
                 f"component-node name={n}.W_all component={n}.W_all input=Append("
                 f"{self.input.final}, IfDefined(Offset({n}.m_trunc, {d})))",
                 *self.nonlinearity_nodes(f"{n}.W_all")]
        if self.batchnorm:
            lines += _batchnorm(n, "m", C)
        lines.append(f"### End LSTM layer '{n}'")
        return ref_and_final(lines)

    def nonlinearity_components(self) -> list[str]:
        """`L.lstm_nonlin` and the truncation `L.cm_trunc` of its output (c_t, m_t)."""
        n, C = self.name, self.config["cell-dim"]
        return [f"component name={n}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C} "
                f"{self.config['lstm-nonlinearity-options']} {self.l2_option()}",
                _TRUNCATION_COMMENT,
                f"component name={n}.cm_trunc type=BackpropTruncationComponent dim={2 * C} "
                f"{self.truncation_options()}"]

    def nonlinearity_nodes(self, gates: str) -> list[str]:
        """The cell on [gates, c_{t+delay}]; `L.m`, the truncated `L.c_trunc`, `L.m_trunc`."""
        n, C, d = self.name, self.config["cell-dim"], self.config["delay"]
        return [f"component-node name={n}.lstm_nonlin component={n}.lstm_nonlin "
                f"input=Append({gates}, IfDefined(Offset({n}.c_trunc, {d})))",
                f"dim-range-node name={n}.m input-node={n}.lstm_nonlin dim-offset={C} dim={C}",
                f"component-node name={n}.cm_trunc component={n}.cm_trunc input={n}.lstm_nonlin",
                f"dim-range-node name={n}.c_trunc input-node={n}.cm_trunc dim-offset=0 dim={C}",
                f"dim-range-node name={n}.m_trunc input-node={n}.cm_trunc dim-offset={C} "
                f"dim={C}"]


class LstmbLayer(FastLstmLayer):
    """fast-lstm with the gate affine factored through a bottleneck: W_all_a (orthonormal
    LinearComponent on [input, self-scale * m_{t+delay}]), W_all_b, a ScaleAndOffsetComponent;
    output `L.m_batchnorm` (docs/kaldi-formats.md 5.12)."""
    layer_types = ("lstmb-layer",)

    def defaults(self):
        return {**super().defaults(), "bottleneck-dim": -1, "orthonormal-constraint": 1.0,
                "self-scale": 1.0}

    def check(self):
        super().check()
        if self.config["bottleneck-dim"] <= 0:
            raise self.error(f"bottleneck-dim has invalid value {self.config['bottleneck-dim']}")

    def outputs(self):
        return {None: (f"{self.name}.m_batchnorm", self.config["cell-dim"])}

    def config_lines(self):
        c, n = self.config, self.name
        C, B, d = c["cell-dim"], c["bottleneck-dim"], c["delay"]
        affine = c["ng-affine-options"]
        # Kaldi gives l2-regularize to W_all_b only.
        return ref_and_final([
            f"### Begin LSTM layer '{n}'",
            f"component name={n}.W_all_a type=LinearComponent input-dim={self.input.dim + C} "
            f"orthonormal-constraint={c['orthonormal-constraint']} output-dim={B} {affine}",
            f"component name={n}.W_all_b type=LinearComponent input-dim={B} output-dim={4 * C} "
            f"{affine} {self.l2_option()}",
            f"component name={n}.W_all_b_so type=ScaleAndOffsetComponent dim={4 * C} "
            f"max-change=0.75",
            *_NONLINEARITY_COMMENTS,
            *self.nonlinearity_components(),
            f"component name={n}.m_batchnorm type=BatchNormComponent dim={C} ",
            "###  Nodes for the components above.",
            f"component-node name={n}.W_all_a component={n}.W_all_a input=Append("
            f"{self.input.final}, IfDefined(Offset(Scale({c['self-scale']}, {n}.m_trunc), {d})))",
            f"component-node name={n}.W_all_b component={n}.W_all_b input={n}.W_all_a",
            f"component-node name={n}.W_all_b_so component={n}.W_all_b_so input={n}.W_all_b",
            *self.nonlinearity_nodes(f"{n}.W_all_b_so"),
            f"component-node name={n}.m_batchnorm component={n}.m_batchnorm input={n}.m",
            f"### End LSTM layer '{n}'"])


class FastLstmpLayer(_ProjectedMixin, _RecurrentLayer):
    """fast-lstm with a projection W_rp after m; output `L.rp` = [r, p], recurrence on r."""
    layer_types = ("fast-lstmp-layer", "fast-lstmp-batchnorm-layer")

    def defaults(self):
        return {**super().defaults(), **self.projection_defaults(),
                "lstm-nonlinearity-options": " max-change=0.75",
                "ng-affine-options": " max-change=1.5"}

    def outputs(self):
        R, P = self.projection_dims
        node = "rp_batchnorm" if self.batchnorm else "rp"
        return {None: (f"{self.name}.{node}", R + P),
                "c": (f"{self.name}.c", self.config["cell-dim"])}

    def config_lines(self):
        c, n = self.config, self.name
        C, d = c["cell-dim"], c["delay"]
        R, P = self.projection_dims
        affine, l2 = c["ng-affine-options"], self.l2_option()
        use_dropout = "true" if self.dropout else "false"
        lines = [f"##  Begin LSTM layer '{n}'",
                 *_fused_gates(self, recurrent_dim=R),
                 f"component name={n}.lstm_nonlin type=LstmNonlinearityComponent cell-dim={C} "
                 f"use-dropout={use_dropout} {c['lstm-nonlinearity-options']} {l2}",
                 _TRUNCATION_COMMENT,
                 f"component name={n}.cr_trunc type=BackpropTruncationComponent dim={C + R} "
                 f"{self.truncation_options()}"]
        if self.dropout:
            lines.append(f"component name={n}.dropout_mask type=DropoutMaskComponent "
                         f"output-dim=3 dropout-proportion={c['dropout-proportion']} ")
        lines += ["# Component specific to 'projected' LSTM (LSTMP), contains both recurrent",
                  "# and non-recurrent projections",
                  f"component name={n}.W_rp type=NaturalGradientAffineComponent input-dim={C} "
                  f"output-dim={R + P} {affine} {l2}",
                  "###  Nodes for the components above.",
                  f"component-node name={n}.W_all component={n}.W_all input=Append("
                  f"{self.input.final}, IfDefined(Offset({n}.r_trunc, {d})))"]
        nonlin_input = f"{n}.W_all, IfDefined(Offset({n}.c_trunc, {d}))"
        if self.dropout:
            # The mask component takes no input; nnet3 needs one, so it names itself.
            lines.append(f"component-node name={n}.dropout_mask component={n}.dropout_mask "
                         f"input={n}.dropout_mask")
            nonlin_input += f", {n}.dropout_mask"
        lines += [f"component-node name={n}.lstm_nonlin component={n}.lstm_nonlin "
                  f"input=Append({nonlin_input})",
                  f"dim-range-node name={n}.c input-node={n}.lstm_nonlin dim-offset=0 dim={C}",
                  f"dim-range-node name={n}.m input-node={n}.lstm_nonlin dim-offset={C} dim={C}",
                  f"# {n}.rp is the output node of this layer (if we're not including batchnorm)",
                  f"component-node name={n}.rp component={n}.W_rp input={n}.m",
                  f"dim-range-node name={n}.r input-node={n}.rp dim-offset=0 dim={R}",
                  "# Note: it's not 100% efficient that we have to stitch the c",
                  "# and r back together to truncate them but it probably",
                  "# makes the deriv truncation more accurate .",
                  f"component-node name={n}.cr_trunc component={n}.cr_trunc "
                  f"input=Append({n}.c, {n}.r)",
                  f"dim-range-node name={n}.c_trunc input-node={n}.cr_trunc dim-offset=0 dim={C}",
                  f"dim-range-node name={n}.r_trunc input-node={n}.cr_trunc dim-offset={C} "
                  f"dim={R}"]
        if self.batchnorm:
            lines += _batchnorm(n, "rp", R + P)
        lines.append(f"### End LSTM Layer '{n}'")
        return ref_and_final(lines)


_TRUNCATION_COMMENT = ("# Component for backprop truncation, to avoid gradient blowup in long "
                       "training examples.")
_NONLINEARITY_COMMENTS = ("# The core LSTM nonlinearity, implemented as a single component.",
                          "# Input = (i_part, f_part, c_part, o_part, c_{t-1}), output = (c_t, m_t)",
                          "# See cu-math.h:ComputeLstmNonlinearity() for details.")


def _fused_gates(layer: _RecurrentLayer, recurrent_dim: int) -> list[str]:
    """The W_all component of the fast layers and the comments before lstm_nonlin."""
    n, C = layer.name, layer.config["cell-dim"]
    return ["# Gate control: contains W_i, W_f, W_c and W_o matrices as blocks.",
            f"component name={n}.W_all type=NaturalGradientAffineComponent "
            f"input-dim={layer.input.dim + recurrent_dim} output-dim={4 * C} "
            f"{layer.config['ng-affine-options']} {layer.l2_option()}",
            *_NONLINEARITY_COMMENTS]


def _batchnorm(n: str, node: str, dim: int) -> list[str]:
    return [f"component name={n}.{node}_batchnorm type=BatchNormComponent dim={dim} ",
            f"component-node name={n}.{node}_batchnorm component={n}.{node}_batchnorm "
            f"input={n}.{node}"]


class _GateLayer(_RecurrentLayer):
    """lstm-layer / lstmp-layer: one affine + diagonal peephole + nonlinearity per gate,
    recurrence through `L.r_t` (m_t for lstm, the projection r for lstmp)."""
    # Blank before "dim=" and after the line, per peephole component, as Kaldi prints them.
    peephole_spacing: ClassVar[dict[str, tuple[str, str]]]
    begin_comment: ClassVar[bool]

    def gate_defaults(self, per_element_scale_options: str) -> dict[str, object]:
        return {**_RecurrentLayer.defaults(self),
                "ng-per-element-scale-options": per_element_scale_options,
                "ng-affine-options": " max-change=0.75 ",
                "self-repair-scale-nonlinearity": 0.00001}

    def check(self):
        super().check()
        if not 0.0 <= self.config["self-repair-scale-nonlinearity"] <= 1.0:
            raise self.error("self-repair-scale-nonlinearity must be in [0, 1]")

    @property
    def recurrent_dim(self) -> int:
        return self.config["cell-dim"]

    @property
    def dropout(self) -> bool:
        return False

    def gate_lines(self) -> list[str]:
        """Everything up to m_t; the subclasses add how m_t becomes the output and r_t."""
        return self._gate_components() + self._gate_nodes()

    def _gate_components(self) -> list[str]:
        c, n, C = self.config, self.name, self.config["cell-dim"]
        affine, l2 = c["ng-affine-options"], self.l2_option()
        repair = f"self-repair-scale={c['self-repair-scale-nonlinearity']:.10f}"
        pes = c["ng-per-element-scale-options"]
        if "param-mean" not in pes and "param-stddev" not in pes:
            pes += " param-mean=0.0 param-stddev=1.0 "

        def gate_affine(gate: str) -> str:
            return (f"component name={n}.W_{gate}.xr type=NaturalGradientAffineComponent "
                    f"input-dim={self.input.dim + self.recurrent_dim} output-dim={C} {affine} {l2}")

        def peephole(gate: str) -> str:
            before, after = self.peephole_spacing[gate]
            return (f"component name={n}.w_{gate}.c type=NaturalGradientPerElementScaleComponent"
                    f"{before}dim={C} {pes} {l2}{after}")

        diagonal = "# note : the cell outputs pass through a diagonal matrix"
        lines = [f"### Begin LSTM layer '{n}'"] if self.begin_comment else []
        lines += ["# Input gate control : W_i* matrices", gate_affine("i"),
                  diagonal, peephole("i"),
                  "# Forget gate control : W_f* matrices", gate_affine("f"),
                  diagonal, peephole("f"),
                  "#  Output gate control : W_o* matrices", gate_affine("o"),
                  diagonal, peephole("o"),
                  "# Cell input matrices : W_c* matrices", gate_affine("c"),
                  "# Defining the non-linearities"]
        lines += [f"component name={n}.{g} type={kind}Component dim={C} {repair}"
                  for g, kind in (("i", "Sigmoid"), ("f", "Sigmoid"), ("o", "Sigmoid"),
                                  ("g", "Tanh"), ("h", "Tanh"))]
        if self.dropout:
            per_frame = "true" if c["dropout-per-frame"] else "false"
            lines.append(f"component name={n}.dropout type=DropoutComponent dim={C} "
                         f"dropout-proportion={c['dropout-proportion']} "
                         f"dropout-per-frame={per_frame}")
        lines.append("# Defining the components for other cell computations")
        lines += [f"component name={n}.{p} type=ElementwiseProductComponent input-dim={2 * C} "
                  f"output-dim={C}" for p in ("c1", "c2", "m")]
        lines.append(f"component name={n}.c type=BackpropTruncationComponent dim={C} "
                     f"{self.truncation_options()}")
        return lines

    def _gate_nodes(self) -> list[str]:
        n, d = self.name, self.config["delay"]
        recurrent = f"input=Append({self.input.final}, IfDefined(Offset({n}.r_t, {d})))"
        delayed_c = f"IfDefined(Offset({n}.c_t, {d}))"
        lines = [f"component-node name={n}.c_t component={n}.c input=Sum({n}.c1_t, {n}.c2_t)"]
        for gate in "ifo":
            # The i and f peepholes see the previous cell (printed with two blanks before
            # input=), the o peephole the current one.
            peephole_input = f"  input={delayed_c}" if gate != "o" else f" input={n}.c_t"
            lines += [f"# {gate}_t",
                      f"component-node name={n}.{gate}1_t component={n}.W_{gate}.xr {recurrent}",
                      f"component-node name={n}.{gate}2_t component={n}.w_{gate}.c"
                      f"{peephole_input}"]
            gate_sum = f"component={n}.{gate} input=Sum({n}.{gate}1_t, {n}.{gate}2_t)"
            if self.dropout:
                lines += [f"component-node name={n}.{gate}_t_predrop {gate_sum}",
                          f"component-node name={n}.{gate}_t component={n}.dropout "
                          f"input={n}.{gate}_t_predrop"]
            else:
                lines.append(f"component-node name={n}.{gate}_t {gate_sum}")
        return lines + [
            "# h_t",
            f"component-node name={n}.h_t component={n}.h input={n}.c_t",
            "# g_t",
            f"component-node name={n}.g1_t component={n}.W_c.xr {recurrent}",
            f"component-node name={n}.g_t component={n}.g input={n}.g1_t",
            "# parts of c_t",
            f"component-node name={n}.c1_t component={n}.c1  input=Append({n}.f_t, {delayed_c})",
            f"component-node name={n}.c2_t component={n}.c2 input=Append({n}.i_t, {n}.g_t)",
            "# m_t",
            f"component-node name={n}.m_t component={n}.m input=Append({n}.o_t, {n}.h_t)"]


class LstmLayer(_GateLayer):
    """Output `L.m_t`; the recurrence goes through `L.r_t` = truncated m_t."""
    layer_types = ("lstm-layer",)
    peephole_spacing = {"i": (" ", " "), "f": (" ", ""), "o": ("  ", "")}
    begin_comment = True

    def defaults(self):
        return self.gate_defaults(" max-change=0.75")

    def outputs(self):
        C = self.config["cell-dim"]
        return {None: (f"{self.name}.m_t", C), "c_t": (f"{self.name}.c_t", C)}

    def config_lines(self):
        n, C = self.name, self.config["cell-dim"]
        return ref_and_final(self.gate_lines() + [
            f"component name={n}.r type=BackpropTruncationComponent dim={C} "
            f"{self.truncation_options()}",
            f"component-node name={n}.r_t component={n}.r input={n}.m_t",
            f"### End LSTM layer '{n}'"])


class LstmpLayer(_ProjectedMixin, _GateLayer):
    """lstm-layer with projection W_rp.m after m_t; output `L.rp_t`, recurrence on r."""
    layer_types = ("lstmp-layer", "lstmp-batchnorm-layer")
    peephole_spacing = {"i": (" ", ""), "f": ("  ", ""), "o": (" ", "")}
    begin_comment = False

    def defaults(self):
        return {**self.gate_defaults(" max-change=0.75 "), **self.projection_defaults(),
                "dropout-per-frame": False}

    @property
    def recurrent_dim(self) -> int:
        return self.config["recurrent-projection-dim"]

    def outputs(self):
        R, P = self.projection_dims
        node = "rp_t_batchnorm" if self.batchnorm else "rp_t"
        return {None: (f"{self.name}.{node}", R + P),
                "c_t": (f"{self.name}.c_t", self.config["cell-dim"])}

    def config_lines(self):
        n, C = self.name, self.config["cell-dim"]
        R, P = self.projection_dims
        lines = self.gate_lines() + [
            "# projection matrices : Wrm and Wpm",
            f"component name={n}.W_rp.m type=NaturalGradientAffineComponent input-dim={C} "
            f"output-dim={R + P} {self.config['ng-affine-options']} {self.l2_option()}",
            f"component name={n}.r type=BackpropTruncationComponent dim={R} "
            f"{self.truncation_options()}",
            "# r_t and p_t : rp_t will be the output (if we're not doing batchnorm)",
            f"component-node name={n}.rp_t component={n}.W_rp.m input={n}.m_t",
            f"dim-range-node name={n}.r_t_preclip input-node={n}.rp_t dim-offset=0 dim={R}",
            f"component-node name={n}.r_t component={n}.r input={n}.r_t_preclip"]
        if self.batchnorm:
            lines += _batchnorm(n, "rp_t", R + P)
        return ref_and_final(lines)
