"""xconfig text -> layers (Kaldi's `xconfig/parser.py` `read_xconfig_file`)."""
from __future__ import annotations

from .attention_layers import AttentionLayer
from .basic_layers import AffineLayer, FixedAffineLayer, InputLayer, NonlinearityLayer, OutputLayer, TrivialOutputLayer
from .component_layers import BatchnormComponentLayer, LinearComponentLayer, NoOpComponentLayer
from .composite_layers import PrefinalLayer, TdnnfLayer
from .conv_layers import ChannelAverageLayer, ConvLayer, ResBlock
from .frontend_layers import FRONTEND_LAYER_CLASSES
from .gru_layers import GRU_LAYER_CLASSES
from .layer import XconfigLayer
from .lstm_layers import FastLstmLayer, FastLstmpLayer, LstmbLayer, LstmLayer, LstmpLayer
from .stats_layer import StatsLayer
from .syntax import XconfigError, split_xconfig_line

LAYER_CLASSES: dict[str, type[XconfigLayer]] = {
    layer_type: cls
    for cls in (InputLayer, TrivialOutputLayer, OutputLayer, FixedAffineLayer, AffineLayer,
                NonlinearityLayer, FastLstmLayer, FastLstmpLayer, LstmLayer, LstmpLayer, LstmbLayer,
                BatchnormComponentLayer, NoOpComponentLayer, LinearComponentLayer, TdnnfLayer,
                PrefinalLayer, *GRU_LAYER_CLASSES, *FRONTEND_LAYER_CLASSES, ConvLayer, ResBlock,
                ChannelAverageLayer, AttentionLayer, StatsLayer)
    for layer_type in cls.layer_types}


def parse_xconfig(text: str, source: str = "<xconfig>") -> list[XconfigLayer]:
    """Parses xconfig text; errors name `source`:line. Placeholders such as NUM_PDFS must
    already be substituted (see `substitute`)."""
    layers: list[XconfigLayer] = []
    for number, line in enumerate(text.split("\n"), 1):
        where = f"{source}:{number}"
        try:
            parsed = split_xconfig_line(line)
        except XconfigError as e:
            raise XconfigError(f"{where}: {e}: {line.strip()}") from None
        if parsed is None:
            continue
        layer_type, values = parsed
        cls = LAYER_CLASSES.get(layer_type)
        if cls is None:
            raise XconfigError(f"{where}: unknown layer type {layer_type!r}; supported: "
                               f"{', '.join(sorted(LAYER_CLASSES))}")
        layers.append(cls(layer_type, values, layers, where))
    if not layers:
        raise XconfigError(f"{source}: the xconfig has no layers")
    return layers


def read_xconfig(path: str) -> list[XconfigLayer]:
    with open(path) as f:
        return parse_xconfig(f.read(), path)
