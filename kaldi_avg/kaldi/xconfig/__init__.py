"""xconfig -> nnet3 config lines, as Kaldi's `steps/nnet3/xconfig_to_configs.py` writes them
(docs/kaldi-formats.md 5.4-5.10). Pure text processing: the lines feed `nnet3-init`-style
network building elsewhere.

    layers = parse_xconfig(substitute(text, {"NUM_PDFS": 42}), "network.xconfig")
    lines = get_config_lines(layers)          # {"init": [...], "ref": [...], "final": [...]}
    write_config_dir("network.xconfig", "exp/lstm/configs", {"NUM_PDFS": 42})
"""
from .layer import ResolvedInput, XconfigLayer
from .parser import LAYER_CLASSES, parse_xconfig, read_xconfig
from .syntax import XconfigError, substitute
from .writer import ConfigDir, get_config_lines, write_config_dir, write_layer_files

__all__ = ["ConfigDir", "LAYER_CLASSES", "ResolvedInput", "XconfigError", "XconfigLayer",
           "get_config_lines", "parse_xconfig", "read_xconfig", "substitute",
           "write_config_dir", "write_layer_files"]
