"""Kaldi config lines (`first-word key=value ...`), as nnet3 configs and xconfig files use them.

Lexical rules of `ConfigLine::ParseLine` (docs/kaldi-formats.md 5.1): `#` starts a comment, a
value runs to the last blank before the next `key=`, quotes are allowed, the first
occurrence of a repeated key wins, and every key must be consumed by the reader.
"""
from __future__ import annotations

import re

from ...errors import UsageError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_KEY_START = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.\-]*)=")


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def name_matches_pattern(name: str, pattern: str) -> bool:
    """Kaldi's NameMatchesPattern: `*` matches any run of characters, every other character only
    itself (no `?` or `[...]` as in shell globs)."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name, re.DOTALL) is not None


class NetworkConfigError(UsageError):
    """A config line, descriptor or xconfig that Kaldi would reject (one line, naming it)."""


class ConfigLine:
    """One parsed line; `get_*` consume keys so `check_all_used` can report leftovers."""

    def __init__(self, first: str, values: dict[str, str], text: str, where: str = ""):
        self.first = first
        self.values = values
        self.text = text
        self.where = where
        self._used: set[str] = set()

    @classmethod
    def parse(cls, line: str, where: str = "") -> ConfigLine | None:
        """Returns None for blank or comment-only lines."""
        text = line.split("#", 1)[0].strip()
        if not text:
            return None
        first, _, rest = text.partition(" ")
        rest = rest.strip()
        if "=" in first:
            raise NetworkConfigError(f"{where}: line must start with a word, not a key=value: {line!r}")
        values: dict[str, str] = {}
        starts = [(m.start(1), m.end(), m.group(1)) for m in _KEY_START.finditer(rest)]
        if rest and (not starts or rest[:starts[0][0]].strip()):
            raise NetworkConfigError(f"{where}: cannot parse {rest!r} as key=value pairs in {line!r}")
        for i, (_, vstart, key) in enumerate(starts):
            vend = starts[i + 1][0] if i + 1 < len(starts) else len(rest)
            value = rest[vstart:vend].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values.setdefault(key, value)
        return cls(first, values, text, where)

    def has(self, key: str) -> bool:
        return key in self.values

    def get_str(self, key: str, default: str | None = None) -> str:
        if key in self.values:
            self._used.add(key)
            return self.values[key]
        if default is None:
            raise NetworkConfigError(f"{self.where}: missing required option {key}= in: {self.text}")
        return default

    def get_int(self, key: str, default: int | None = None) -> int:
        v = self.get_str(key, None if default is None else str(default))
        try:
            return int(v)
        except ValueError:
            raise NetworkConfigError(f"{self.where}: option {key}={v} is not an integer in: {self.text}") from None

    def get_float(self, key: str, default: float | None = None) -> float:
        v = self.get_str(key, None if default is None else repr(default))
        try:
            return float(v)
        except ValueError:
            raise NetworkConfigError(f"{self.where}: option {key}={v} is not a number in: {self.text}") from None

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        v = self.get_str(key, None if default is None else str(default).lower())
        if v.lower() in ("true", "t", "1", "yes"):
            return True
        if v.lower() in ("false", "f", "0", "no"):
            return False
        raise NetworkConfigError(f"{self.where}: option {key}={v} is not a boolean in: {self.text}")

    def unused(self) -> list[str]:
        return [k for k in self.values if k not in self._used]

    def check_all_used(self) -> None:
        left = self.unused()
        if left:
            raise NetworkConfigError(f"{self.where}: unused values {', '.join(left)} in: {self.text}")


def read_config_lines(text: str, source: str = "<config>") -> list[ConfigLine]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        cl = ConfigLine.parse(line, f"{source}:{i}")
        if cl is not None:
            out.append(cl)
    return out
