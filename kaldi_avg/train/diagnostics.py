"""Kaldi's training log formats (docs/kaldi-formats.md 6.9).

* `log/compute_prob_{valid,train}.<iter>.log` with nnet3-compute-prob's PrintTotalStats lines;
* `log/train.<iter>.<job>.log` with nnet3-train's phase lines, the final "Overall average
  objective function for 'output' is X over N frames." and run.pl's `# Accounting:` trailer;
* `accuracy.report` (`generate_acc_logprob_report`) and a PNG of objective/accuracy per iteration.
"""
from __future__ import annotations

import datetime
import glob
import os
import re
import sys
import time

from ..atomic import atomic_path, write_text
from ..errors import MissingExtraError, import_extra
from ..kaldi.runlog import write_run_log
from .expdir import ExpDir
from .objective import CROSS_ENTROPY, Objective

VERSION = "kaldi-avg"
PROB_RE = re.compile(r".*compute_prob_.*\.([0-9]+).log:LOG .nnet3.*compute-prob.*:PrintTotalStats..:"
                     r"nnet.*diagnostics.cc:[0-9]+. Overall ([a-zA-Z\-]+) for 'output'.*is ([0-9.\-e]+) .*per frame")
ACCOUNTING_RE = re.compile(r"# Accounting: time=(\d+(?:\.\d+)?) threads=")


def _log_prefix(program: str, function: str, source: str, line: int) -> str:
    return f"LOG ({program}[{VERSION}]:{function}():{source}:{line}) "


def _frames(x: float) -> str:
    return f"{x:g}" if x != int(x) else str(int(x))


def write_compute_prob_log(path: str, stats, command: str, seconds: float,
                           objective: Objective = CROSS_ENTROPY) -> None:
    """The PrintTotalStats lines of `objective`'s compute-prob program for `stats`."""
    p = _log_prefix(objective.prob_program, "PrintTotalStats", objective.prob_source, 194)
    write_run_log(path, command, [p + line for line in stats.lines()], seconds)


class TrainLog:
    """Collects nnet3-train's (nnet3-chain-train's) phase lines (every `print_interval`
    minibatches) for one job."""

    def __init__(self, command: str, print_interval: int = 10, program: str = "nnet3-train"):
        self.command = command
        self.program = program
        self.print_interval = print_interval
        self.lines: list[str] = []
        self.total = 0.0
        self.frames = 0.0
        self._phase_objf = 0.0
        self._phase_frames = 0.0
        self._count = 0
        self.started = time.time()

    def add(self, objf: float, frames: float) -> None:
        self.total += objf
        self.frames += frames
        self._phase_objf += objf
        self._phase_frames += frames
        self._count += 1
        if self._count % self.print_interval == 0:
            self._flush_phase()

    def _flush_phase(self) -> None:
        if self._phase_frames <= 0:
            return
        first = ((self._count - 1) // self.print_interval) * self.print_interval
        p = _log_prefix(self.program, "PrintStatsForThisPhase", "nnet-training.cc", 273)
        self.lines.append(p + f"Average objective function for 'output' for minibatches {first}-"
                              f"{self._count - 1} is {self._phase_objf / self._phase_frames:g} over "
                              f"{_frames(self._phase_frames)} frames.")
        self._phase_objf = self._phase_frames = 0.0

    def note(self, text: str) -> None:
        self.lines.append(_log_prefix(self.program, "Train", "kaldi-avg", 0) + text)

    @property
    def objf_per_frame(self) -> float:
        return self.total / self.frames if self.frames else float("-inf")

    def write(self, path: str) -> None:
        if self._count % self.print_interval:
            self._flush_phase()
        p = _log_prefix(self.program, "PrintTotalStats", "nnet-training.cc", 307)
        write_run_log(path, self.command, self.lines + [
            p + f"Overall average objective function for 'output' is {self.objf_per_frame:g} over "
                f"{_frames(self.frames)} frames."], time.time() - self.started)


def parse_prob_logs(log_dir: str, kind: str, key: str = "accuracy") -> dict[int, float]:
    """{iter: value} of `key` ('accuracy', 'log-likelihood', chain's 'log-probability') from
    compute_prob_<kind>.*.log."""
    out = {}
    for path in glob.glob(os.path.join(log_dir, f"compute_prob_{kind}.*.log")):
        with open(path) as f:
            for line in f:
                m = PROB_RE.match(f"{path}:{line}")
                if m and m.group(2) == key:
                    out[int(m.group(1))] = float(m.group(3))
    return out


def parse_train_times(log_dir: str) -> dict[int, float]:
    """{iter: max over jobs of the accounting time} (Kaldi's parse_train_logs)."""
    times: dict[int, float] = {}
    for path in glob.glob(os.path.join(log_dir, "train.*.*.log")):
        m = re.match(r"train\.(\d+)\.(\d+)\.log$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            for line in f:
                a = ACCOUNTING_RE.search(line)
                if a:
                    it = int(m.group(1))
                    times[it] = max(times.get(it, 0.0), float(a.group(1)))
    return times


def write_accuracy_report(exp: ExpDir, key: str = "accuracy") -> str:
    """accuracy.report as Kaldi's generate_acc_logprob_report writes it."""
    log_dir = exp.log_dir
    train = parse_prob_logs(log_dir, "train", key)
    valid = parse_prob_logs(log_dir, "valid", key)
    times = parse_train_times(log_dir)
    lines = ["%Iter\tduration\ttrain_objective\tvalid_objective\tdifference"]
    for it in sorted(set(train) & set(valid)):
        lines.append("%d\t%s\t%g\t%g\t%g" % (it, str(times.get(it, "NA")), train[it], valid[it],
                                            valid[it] - train[it]))
    total = sum(times.values())
    text = "\n".join(lines) + "\n" + f"Total training time is {datetime.timedelta(seconds=int(total))}\n"
    write_text(exp.accuracy_report, text)
    return text


_NO_PLOTS_SAID: list[str] = []   # the warning that progress.png cannot be drawn, once per process


def plot_progress(exp: ExpDir, keys: tuple[str, ...] = ("log-likelihood", "accuracy")) -> str | None:
    """PNG of train/valid `keys` (chain: log-probability) per iteration (matplotlib Agg); without
    matplotlib (the `plots` extra), None and a WARNING line, once."""
    log_dir, path = exp.log_dir, exp.progress_png
    try:
        matplotlib = import_extra("matplotlib", "plots", "drawing the training curves")
    except MissingExtraError as e:
        if not _NO_PLOTS_SAID:
            _NO_PLOTS_SAID.append(str(e))
            print(f"WARNING: {path} is not drawn: {e}", file=sys.stderr, flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for kind in ("train", "valid"):
            data = parse_prob_logs(log_dir, kind, key)
            its = sorted(data)
            ax.plot(its, [data[i] for i in its], marker=".", label=kind)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
