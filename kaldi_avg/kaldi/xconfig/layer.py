"""The base class of xconfig layers: Kaldi's option defaults, the user's values, the resolved
input descriptor, and the node names other layers see (Kaldi's `XconfigLayerBase`).

A subclass gives `defaults()` (Kaldi's option names and default values, whose types decide
how values are parsed), optionally `derive()` (defaults computed from other values) and
`check()`, its `outputs()` and its `config_lines()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ..nnet3.config import is_valid_name
from .descriptor import XconfigDescriptor, parse_xconfig_descriptor
from .syntax import XconfigError, convert_value


@dataclass(frozen=True)
class ResolvedInput:
    """A layer's `input=` descriptor: as parsed, its dim, and its two printed forms."""
    descriptor: XconfigDescriptor
    dim: int
    normalized: str  # with layer names, as in xconfig.expanded.2 (e.g. `lstm1`)
    final: str       # with node names, as in the configs (e.g. `lstm1.rp`)


class XconfigLayer(ABC):
    """One parsed xconfig line. Public: `layer_type`, `name`, `where` (file:line), `config`
    (every option of the type under Kaldi's name, defaults and derived values filled in) and
    `input` (a ResolvedInput; None for `input` layers)."""
    layer_types: ClassVar[tuple[str, ...]] = ()
    has_input: ClassVar[bool] = True

    def __init__(self, layer_type: str, values: dict[str, str],
                 previous: list[XconfigLayer], where: str):
        self.layer_type = layer_type
        self.where = where
        self.name = values.get("name", "")
        if not self.name:
            raise self.error("name= is required")
        if not is_valid_name(self.name):
            raise self.error("invalid name: it must start with a letter or '_' and contain "
                             "only letters, digits, '_', '-' and '.'")
        if any(p.name == self.name for p in previous):
            raise self.error("this name is already used by a layer above")
        self.config: dict[str, object] = self.defaults()
        self._set_options(values)
        self.input = self._resolve_input(previous) if self.has_input else None
        self.derive()
        self.check()

    def _set_options(self, values: dict[str, str]) -> None:
        for key, text in values.items():
            if key == "name":
                continue
            if key not in self.config:
                allowed = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                                   for k, v in sorted(self.config.items()))
                raise self.error(f"unknown option {key}=; the options of {self.layer_type} "
                                 f"(with defaults) are: {allowed}")
            try:
                self.config[key] = convert_value(key, self.config[key], text)
            except XconfigError as e:
                raise self.error(str(e)) from None

    # -- to be provided by subclasses -------------------------------------------------------
    @abstractmethod
    def defaults(self) -> dict[str, object]:
        """Kaldi's options of this layer type with their default values."""

    def derive(self) -> None:
        """Kaldi's default: a `dim` that is not set becomes the input dim."""
        if "dim" in self.config and self.config["dim"] <= 0:
            self.config["dim"] = self.input.dim

    def check(self) -> None:
        pass

    @abstractmethod
    def outputs(self) -> dict[str | None, tuple[str, int]]:
        """{None: (node, dim)} for the main output, {'aux': (node, dim)} for `name.aux`."""

    @abstractmethod
    def config_lines(self) -> list[tuple[str, str]]:
        """(basename, line) pairs for init/ref/final.config, in Kaldi's order."""

    def files(self) -> dict[str, str]:
        """{path: text} of the files Kaldi's layer writes at config time (idct-layer's matrix);
        paths as given in the xconfig, relative to the working directory."""
        return {}

    # -- shared -----------------------------------------------------------------------------
    def error(self, msg: str) -> XconfigError:
        return XconfigError(f"{self.where}: {self.layer_type} name={self.name}: {msg}")

    def output_name(self, aux: str | None = None) -> str:
        return self._output(aux)[0]

    def output_dim(self, aux: str | None = None) -> int:
        return self._output(aux)[1]

    def _output(self, aux: str | None) -> tuple[str, int]:
        outputs = self.outputs()
        if aux in outputs:
            return outputs[aux]
        if aux is None:
            raise XconfigError(f"the output of {self.layer_type} '{self.name}' is an nnet3 "
                               f"output node, which other layers cannot use as input")
        known = ", ".join(f"{self.name}.{a}" for a in outputs if a is not None) or "none"
        raise XconfigError(f"{self.layer_type} '{self.name}' has no auxiliary output "
                           f"'{aux}' (it has: {known})")

    def expanded(self, normalized: bool = False) -> str:
        """The line as Kaldi writes it to xconfig.expanded.1 (or .2 with `normalized`)."""
        config = dict(self.config)
        if normalized and self.input is not None:
            config["input"] = self.input.normalized
        entries = [f"{self.layer_type} name={self.name}"]
        for key, value in sorted(config.items()):
            quoted = isinstance(value, str) and "=" in value
            entries.append(f'{key}="{value}"' if quoted else f"{key}={value}")
        return " ".join(entries)

    def __str__(self) -> str:
        return self.expanded()

    def _resolve_input(self, previous: list[XconfigLayer]) -> ResolvedInput:
        def node_name(reference: str) -> str:
            layer, aux = _lookup(previous, reference)
            return layer.output_name(aux)

        def node_dim(reference: str) -> int:
            layer, aux = _lookup(previous, reference)
            return layer.output_dim(aux)

        try:
            d = parse_xconfig_descriptor(self.config["input"], [p.name for p in previous])
            return ResolvedInput(d, d.dim(node_dim), d.text(), d.text(node_name))
        except XconfigError as e:
            raise self.error(f"input={self.config['input']}: {e}") from None


def _lookup(previous: list[XconfigLayer], reference: str) -> tuple[XconfigLayer, str | None]:
    """The layer that `reference` (a layer name, or `layer.aux`) points to, and the aux name."""
    for layer in previous:
        if layer.name == reference:
            return layer, None
    base, _, aux = reference.partition(".")
    for layer in previous:
        if layer.name == base:
            return layer, aux
    raise XconfigError(f"no layer named '{base}' above this line")


def ref_and_final(lines: list[str]) -> list[tuple[str, str]]:
    """Lines that go to both ref.config and final.config (layers without fixed matrices)."""
    return [(basename, line) for line in lines for basename in ("ref", "final")]


def pass_through(base: str, config: dict[str, object], keys: tuple[str, ...]) -> str:
    """`base` followed by ' key=value' for each of `keys` whose value is set (not '')."""
    return base + "".join(f" {k}={config[k]}" for k in keys if config[k] != "")
