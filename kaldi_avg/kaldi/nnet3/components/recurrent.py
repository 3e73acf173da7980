"""Components of xconfig's fast LSTM layers (docs/kaldi-formats.md 4.7, 4.8, 5.6, 5.7):
the LSTM cell nonlinearity, the recurrence truncation/decay, and the per-frame dropout mask."""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import UPDATABLE_HEADER, Kind, SameDimComponent, UpdatableComponent, field, optional, summarize_vector
from .initializers import gaussian, learning_rate_options, require

# Order of the five nonlinearities in the stats rows and in SelfRepairConfig.
LSTM_NONLINEARITIES = ("i_t_sigmoid", "f_t_sigmoid", "c_t_tanh", "o_t_sigmoid", "m_t_tanh")


def default_self_repair_config(sigmoid_threshold: float = 0.05, tanh_threshold: float = 0.2,
                               scale: float = 1e-05) -> np.ndarray:
    """5 lower thresholds (sigmoid, sigmoid, tanh, sigmoid, tanh) then 5 scales."""
    thresholds = [sigmoid_threshold, sigmoid_threshold, tanh_threshold, sigmoid_threshold,
                  tanh_threshold]
    return np.array(thresholds + [scale] * 5, np.float32)


def _zero_stats(values) -> np.ndarray:
    return np.zeros((5, values["peepholes"].shape[1]), np.float32)


class LstmNonlinearityComponent(UpdatableComponent):
    """Input [i, f, c, o parts, c_prev] (5C, +3 dropout scales), output [c_t, m_t] (2C).
    `peepholes` (<Params>) are the 3 x C diagonal peepholes (w_ic, w_fc, w_oc); C is taken from the 5 x C
    stats, so those must have the right shape even when zero (pitfall 14)."""
    type_name = "LstmNonlinearityComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<Params>", Kind.MATRIX, attr="peepholes"),
        field("<ValueAvg>", Kind.MATRIX, _zero_stats),
        field("<DerivAvg>", Kind.MATRIX, _zero_stats),
        field("<SelfRepairConfig>", Kind.VECTOR, lambda v: default_self_repair_config()),
        field("<SelfRepairProb>", Kind.VECTOR, lambda v: np.zeros(5, np.float32)),
        optional("<UseDropout>", Kind.BOOL, False, when=lambda c: c.use_dropout),
        field("<Count>", Kind.F64, 0.0),
    )
    PARAMS = ("peepholes",)

    def cell_dim(self) -> int:
        shape = np.shape(self.value_avg)
        return int(shape[1]) if len(shape) == 2 else 0

    def input_dim(self) -> int:
        return 5 * self.cell_dim() + (3 if self.use_dropout else 0)

    def output_dim(self) -> int:
        return 2 * self.cell_dim()

    def check(self) -> None:
        super().check()
        c = self.cell_dim()
        self.require(c > 0, f"ValueAvg must be 5 x cell-dim (it defines the dims), got shape "
                            f"{np.shape(self.value_avg)}")
        for attr, rows in (("peepholes", 3), ("value_avg", 5), ("deriv_avg", 5)):
            shape = np.shape(getattr(self, attr))
            self.require(shape == (rows, c), f"{attr} must be {rows} x {c}, got {shape}")
        for attr, n in (("self_repair_config", 10), ("self_repair_prob", 5)):
            shape = np.shape(getattr(self, attr))
            self.require(shape == (n,), f"{attr} must have {n} entries, got {shape}")
        self.require(self.count >= 0, "count must be >= 0")

    def info_items(self):
        items = super().info_items() + [("cell-dim", self.cell_dim()),
                                        ("use-dropout", self.use_dropout)]
        for i, name in enumerate(("w_ic", "w_fc", "w_oc")):
            row = np.asarray(self.peepholes[i], np.float64)
            items.append((f"{name}-rms", float(np.sqrt(np.mean(row * row)))))
        if self.count > 0:
            items.append(("count", float("%.3g" % self.count)))
        # Per nonlinearity, as Kaldi's Info(): `i_t_sigmoid={ ..., value-avg=[...], deriv-avg=[...] }`.
        for i, name in enumerate(LSTM_NONLINEARITIES):
            block = [f"self-repair-lower-threshold={float(self.self_repair_config[i]):g}",
                     f"self-repair-scale={float(self.self_repair_config[i + 5]):g}"]
            if self.count != 0:
                block += [f"self-repaired-proportion={float(self.self_repair_prob[i]):g}",
                          f"value-avg={summarize_vector(self.value_avg[i])}",
                          f"deriv-avg={summarize_vector(self.deriv_avg[i])}"]
            items.append((name, "{ " + ", ".join(block) + " }"))
        return items

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> LstmNonlinearityComponent:
        """Peepholes ~ N(0, param-stddev^2) (default 1.0); self-repair thresholds 0.05 (sigmoid),
        0.2 (tanh), scale 1e-05; zero stats."""
        t = cls.type_name
        values = learning_rate_options(cfg)
        cell_dim = cfg.get_int("cell-dim")
        param_stddev = cfg.get_float("param-stddev", 1.0)
        tanh_threshold = cfg.get_float("tanh-self-repair-threshold", 0.2)
        sigmoid_threshold = cfg.get_float("sigmoid-self-repair-threshold", 0.05)
        scale = cfg.get_float("self-repair-scale", 1e-05)
        require(cfg, t, cell_dim > 0, "cell-dim must be > 0")
        require(cfg, t, param_stddev >= 0, "param-stddev must be >= 0")
        require(cfg, t, 0.0 <= tanh_threshold <= 1.0, "tanh-self-repair-threshold must be in [0, 1]")
        require(cfg, t, 0.0 <= sigmoid_threshold <= 0.25,
                "sigmoid-self-repair-threshold must be in [0, 0.25]")
        require(cfg, t, 0.0 <= scale <= 0.1, "self-repair-scale must be in [0, 0.1]")
        return cls(**values, peepholes=gaussian(rng, (3, cell_dim), param_stddev),
                   self_repair_config=default_self_repair_config(sigmoid_threshold, tanh_threshold,
                                                                 scale),
                   use_dropout=cfg.get_bool("use-dropout", False))


class BackpropTruncationComponent(SameDimComponent):
    """Forward y = scale * x (xconfig's decay-time); backward clips and zeros derivatives."""
    type_name = "BackpropTruncationComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        optional("<Scale>", Kind.F32, 1.0),
        field("<ClippingThreshold>", Kind.F32, 30.0),
        field("<ZeroingThreshold>", Kind.F32, 15.0),
        field("<ZeroingInterval>", Kind.I32, 20),
        field("<RecurrenceInterval>", Kind.I32, 1),
        field("<NumElementsClipped>", Kind.F64, 0.0),
        field("<NumElementsZeroed>", Kind.F64, 0.0),
        field("<NumElementsProcessed>", Kind.F64, 0.0),
        field("<NumZeroingBoundaries>", Kind.F64, 0.0),
    )

    def check(self) -> None:
        super().check()
        self.require(self.scale > 0, f"scale must be > 0, got {self.scale}")
        self.require(self.clipping_threshold >= 0 and self.zeroing_threshold >= 0,
                     "clipping and zeroing thresholds must be >= 0")
        self.require(self.zeroing_interval >= 1 and self.recurrence_interval >= 1,
                     "zeroing-interval and recurrence-interval must be >= 1")

    def info_items(self):
        return [("dim", self.dim), ("scale", self.scale),
                ("count", float("%.3g" % self.num_elements_processed)),
                ("recurrence-interval", self.recurrence_interval),
                ("clipping-threshold", self.clipping_threshold),
                ("zeroing-threshold", self.zeroing_threshold),
                ("zeroing-interval", self.zeroing_interval)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> BackpropTruncationComponent:
        return cls(dim=cfg.get_int("dim"), scale=cfg.get_float("scale", 1.0),
                   clipping_threshold=cfg.get_float("clipping-threshold", 30.0),
                   zeroing_threshold=cfg.get_float("zeroing-threshold", 15.0),
                   zeroing_interval=cfg.get_int("zeroing-interval", 20),
                   recurrence_interval=cfg.get_int("recurrence-interval", 1))


class DropoutMaskComponent(SameDimComponent):
    """Per-frame 0/1 masks for the 3 dropout inputs of a LstmNonlinearity (fast-lstmp with
    dropout); its input is ignored. Test mode (decoders) outputs 1 - dropout-proportion."""
    type_name = "DropoutMaskComponent"
    READS_INPUT = False
    FIELDS = (
        field("<OutputDim>", Kind.I32, attr="dim"),
        field("<DropoutProportion>", Kind.F32, 0.5),
        optional("<TestMode>", Kind.BOOL, False),
        optional("<Continuous>", Kind.FLAG, False, when=lambda c: c.continuous),
    )

    def check(self) -> None:
        super().check()
        self.require(0.0 <= self.dropout_proportion <= 1.0, "dropout-proportion must be in [0, 1]")

    def info_items(self):
        items = [("output-dim", self.dim), ("dropout-proportion", self.dropout_proportion)]
        return items + ([("continuous", True)] if self.continuous else [])

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> DropoutMaskComponent:
        return cls(dim=cfg.get_int("output-dim"),
                   dropout_proportion=cfg.get_float("dropout-proportion", 0.5),
                   continuous=cfg.get_bool("continuous", False),
                   test_mode=cfg.get_bool("test-mode", False))
