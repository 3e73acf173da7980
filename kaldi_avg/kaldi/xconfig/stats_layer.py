"""`stats-layer` (Kaldi's `xconfig/stats_layer.py` XconfigStatsLayer; docs/kaldi-formats.md 5.16,
components 4.25 in `kaldi_avg/kaldi/nnet3/components/statistics.py`).

`stats-layer name=s config=mean+stddev(-L:ip:sp:R)`: a StatisticsExtractionComponent summing the
input over blocks of sp frames (read every ip frames) and a StatisticsPoolingComponent averaging
those sums over t-L..t+R; other layers read it as `Round(s-pooling-L-R, sp)`. The statistic is
one of mean, mean+stddev, mean+count, mean+stddev+count (count: one log-count feature first).
"""
from __future__ import annotations

import re

from .layer import XconfigLayer, ref_and_final

# Kaldi matches with re.search, so text around the pattern is ignored as it is there.
_CONFIG = re.compile(r"(mean|mean\+stddev|mean\+count|mean\+stddev\+count)"
                     r"\((-?\d+):(-?\d+):(-?\d+):(-?\d+)\)")


class StatsLayer(XconfigLayer):
    layer_types = ("stats-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "config": ""}

    def derive(self):
        text = self.config["config"]
        if text == "":
            raise self.error("config has to be non-empty")
        m = _CONFIG.search(text)
        if m is None:
            raise self.error(f"invalid statistic-config string: {text}")
        self.stddev = m.group(1) in ("mean+stddev", "mean+stddev+count")
        self.log_count = m.group(1) in ("mean+count", "mean+stddev+count")
        self.left, self.input_period = -int(m.group(2)), int(m.group(3))
        self.stats_period, self.right = int(m.group(4)), int(m.group(5))
        dim = self.input.dim * (2 if self.stddev else 1) + (1 if self.log_count else 0)
        if self.config["dim"] > 0 and self.config["dim"] != dim:
            raise self.error(f"invalid dim supplied {self.config['dim']} != actual output dim {dim}")
        self.config["dim"] = dim

    def check(self):
        left, right, ip, sp = self.left, self.right, self.input_period, self.stats_period
        if not (left >= 0 and right >= 0 and ip > 0 and sp > 0 and left % sp == 0 and right % sp == 0
                and sp % ip == 0):
            raise self.error(f"invalid configuration of statistics-extraction: {self.config['config']}")

    def _names(self) -> tuple[str, str]:
        suffix = f"{self.left}-{self.right}"
        return f"{self.name}-extraction-{suffix}", f"{self.name}-pooling-{suffix}"

    def outputs(self):
        # The pooling output exists only at multiples of the stats period.
        return {None: (f"Round({self._names()[1]}, {self.stats_period})", self.config["dim"])}

    def config_lines(self):
        extraction, pooling = self._names()
        in_dim, stddev = self.input.dim, "true" if self.stddev else "false"
        # Kaldi's lines end in a blank.
        return ref_and_final([
            f"component name={extraction} type=StatisticsExtractionComponent input-dim={in_dim} "
            f"input-period={self.input_period} output-period={self.stats_period} include-variance={stddev} ",
            f"component-node name={extraction} component={extraction} input={self.input.final} ",
            f"component name={pooling} type=StatisticsPoolingComponent "
            f"input-dim={1 + in_dim * (2 if self.stddev else 1)} input-period={self.stats_period} "
            f"left-context={self.left} right-context={self.right} "
            f"num-log-count-features={1 if self.log_count else 0} output-stddevs={stddev} ",
            f"component-node name={pooling} component={pooling} input={extraction} "])
