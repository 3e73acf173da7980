"""Lexical level of xconfig files: one layer per line, `layer-type key=value ...`
(docs/kaldi-formats.md 5.4; Kaldi's `xconfig/utils.py` `parse_config_line`).

xconfig's rules differ from nnet3 config lines (`nnet3/config.py`): only a fixed character
set is allowed, strings containing `=` are double-quoted (single quotes are rejected), runs of
blanks collapse to one space, and a repeated key is an error instead of "first one wins".
"""
from __future__ import annotations

import re

from ..nnet3.config import NetworkConfigError

# Kaldi's allowed characters, plus '[' and ']' so that the `[-1]` shorthand can be written out.
_DISALLOWED = re.compile(r'[^A-Za-z0-9.\-()@_=,/+:\s"\[\]]')
_LAYER_TYPE = re.compile(r"^[a-z][-a-z0-9]+$")
_KEY_EQUALS = re.compile(r"([-A-Za-z0-9_]*)=")
_MASKED_EQUALS = "\0"


class XconfigError(NetworkConfigError):
    """Bad xconfig input; the message names file:line and the layer where known."""


def split_xconfig_line(line: str) -> tuple[str, dict[str, str]] | None:
    """Returns (layer type, {key: value}) or None for a blank/comment-only line."""
    text = " ".join(line.split("#", 1)[0].split())
    bad = _DISALLOWED.search(text)
    if bad:
        hint = " (use double quotes for values containing '=')" if bad.group(0) == "'" else ""
        raise XconfigError(f"disallowed character {bad.group(0)!r}{hint}")
    if not text:
        return None
    layer_type, _, rest = text.partition(" ")
    if not _LAYER_TYPE.match(layer_type):
        raise XconfigError(f"a line must start with a layer type such as 'fast-lstmp-layer', "
                           f"not {layer_type!r}")
    return layer_type, _split_key_values(_mask_quoted_equals(rest))


def _mask_quoted_equals(rest: str) -> str:
    """Blanks out the quote characters and hides `=` inside "..." so that only key= splits."""
    parts = rest.split('"')
    if len(parts) % 2 == 0:
        raise XconfigError("double quotes must come in pairs")
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].replace("=", _MASKED_EQUALS)
    return " ".join(parts)


def _split_key_values(rest: str) -> dict[str, str]:
    keys = list(_KEY_EQUALS.finditer(rest))
    if rest.strip() and (not keys or rest[:keys[0].start()].strip()):
        raise XconfigError(f"expected key=value pairs, got {rest.strip()!r}")
    values: dict[str, str] = {}
    for i, m in enumerate(keys):
        key = m.group(1)
        end = keys[i + 1].start() if i + 1 < len(keys) else len(rest)
        if not re.match(r"[A-Za-z_]", key):
            raise XconfigError(f"option name {key!r} must start with a letter or '_'")
        if key in values:
            raise XconfigError(f"option {key}= is given more than once")
        values[key] = rest[m.end():end].strip().replace(_MASKED_EQUALS, "=")
    return values


def convert_value(key: str, default: object, text: str) -> object:
    """Converts `text` to the type of the option's default, as Kaldi's xconfig does."""
    if isinstance(default, bool):
        if text in ("true", "True"):
            return True
        if text in ("false", "False"):
            return False
        raise XconfigError(f"option {key}={text} must be true or false")
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise XconfigError(f"option {key}={text} must be {what}") from None
    return text


def substitute(text: str, values: dict[str, object]) -> str:
    """Replaces whole-word placeholders such as NUM_PDFS by their values."""
    for name, value in values.items():
        text = re.sub(rf"\b{re.escape(name)}\b", str(value), text)
    return text
