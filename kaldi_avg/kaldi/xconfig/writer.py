"""Layers -> init/ref/final config lines, and the config directory that Kaldi's
`steps/nnet3/xconfig_to_configs.py` writes (docs/kaldi-formats.md 5.4).

`vars` (model contexts) and `*.raw` need the built network and are written by its builder.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ...atomic import write_text
from .layer import XconfigLayer
from .parser import parse_xconfig
from .syntax import XconfigError, substitute

CONFIG_NAMES = ("init", "ref", "final")

_EXPLANATIONS = {
    "init": ("# It contains the input of the network and is used in\n"
             "# accumulating stats for an LDA-like transform of the\n"
             "# input features.\n"),
    "ref": ("# It contains the entire neural network, but with those\n"
            "# components that would normally require fixed vectors/matrices\n"
            "# read from disk, replaced with random initialization\n"
            "# (this applies to the LDA-like transform and the\n"
            "# presoftmax-prior-scale, if applicable).  This file\n"
            "# is used only to work out the left-context and right-context\n"
            "# of the network.\n"),
    "final": "# It contains the entire neural network.\n",
    "xconfig": ("# It is a copy of the source from which the config files in "
                "# this directory were generated.\n"),
    "xconfig.expanded.1": ("#It contains the same content as ./xconfig but it was parsed and\n"
                           "#default config values were set.\n"
                           "# See also ./xconfig.expanded.2\n"),
    "xconfig.expanded.2": ("# It contains the same content as ./xconfig but it was parsed,\n"
                           "# default config values were set, \n"
                           "# and Descriptors (input=xxx) were normalized.\n"
                           "# See also ./xconfig.expanded.1\n"),
}


class ConfigDir(NamedTuple):
    layers: list[XconfigLayer]
    lines: dict[str, list[str]]  # "init" ([] when init.config is not written), "ref", "final"


def get_config_lines(layers: list[XconfigLayer]) -> dict[str, list[str]]:
    """The lines of init.config, ref.config and final.config (without the header comments).
    Comment lines that Kaldi's layers emit are kept. init is [] when no layer (a
    fixed-affine-layer) gives it an output node: Kaldi then writes no init.config."""
    lines: dict[str, list[str]] = {name: [] for name in CONFIG_NAMES}
    for layer in layers:
        for basename, line in layer.config_lines():
            lines[basename].append(line)
    for basename in ("ref", "final"):
        if not _has_output_node(lines[basename]):
            raise XconfigError("the xconfig has no output layer (no output-node in "
                               f"{basename}.config)")
    if not _has_output_node(lines["init"]):
        lines["init"] = []
    return lines


def write_layer_files(layers: list[XconfigLayer]) -> None:
    """Writes the files Kaldi's layers write at config time (idct-layer's matrix), at the paths
    the xconfig gives."""
    for layer in layers:
        for path, text in layer.files().items():
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            write_text(path, text)


def _has_output_node(lines: list[str]) -> bool:
    return any(line.startswith("output-node") for line in lines)


def write_config_dir(xconfig_path: str, config_dir: str,
                     substitutions: dict[str, object] | None = None,
                     command: str | None = None) -> ConfigDir:
    """Writes xconfig, xconfig.expanded.{1,2}, [init.config,] ref.config and final.config into
    `config_dir` like xconfig_to_configs.py (a stale init.config is removed). `substitutions`
    fill placeholders (e.g. {"NUM_PDFS": 42}); `command` is the command line quoted in the
    headers. Nothing is written if the xconfig has an error."""
    with open(xconfig_path) as f:
        text = substitute(f.read(), substitutions or {})
    layers = parse_xconfig(text, xconfig_path)
    lines = get_config_lines(layers)
    command = command or (f"steps/nnet3/xconfig_to_configs.py --xconfig-file {xconfig_path} "
                          f"--config-dir {config_dir}")

    os.makedirs(config_dir, exist_ok=True)
    source_lines = text.split("\n")
    if source_lines[-1] == "":
        source_lines.pop()
    files = {
        "xconfig": [line.strip() for line in source_lines],
        "xconfig.expanded.1": [layer.expanded() for layer in layers],
        "xconfig.expanded.2": [layer.expanded(normalized=True) for layer in layers],
        **{f"{name}.config": lines[name] for name in CONFIG_NAMES if lines[name]},
    }
    for filename, body in files.items():
        explanation = _EXPLANATIONS[filename.removesuffix(".config")]
        header = f"# This file was created by the command:\n# {command}\n{explanation}\n"
        write_text(os.path.join(config_dir, filename), header + "".join(f"{b}\n" for b in body))
    if not lines["init"] and os.path.exists(os.path.join(config_dir, "init.config")):
        os.remove(os.path.join(config_dir, "init.config"))
    write_layer_files(layers)
    return ConfigDir(layers, lines)
