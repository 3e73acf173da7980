"""How many of Kaldi's own recipe networks kaldi-avg supports: a census over the xconfigs that the
scripts of a kaldi-asr/kaldi tree's egs give to steps/nnet3/xconfig_to_configs.py.

It runs every script under `egs/*/*/local/` that calls `steps/nnet3/xconfig_to_configs.py`
(symlinked scripts are counted once, under their target) with bash, with its defaults, in a
sandbox, and keeps the xconfig file of each call. Bash itself does all the expansion (`+=`,
`$[ ]`, `$(( ))`, backticks, `$(...)`, arrays, loops that append with `>>`, the heredoc); the
sandbox only provides what a recipe reads from Kaldi and its data:

  - the working directory is a scratch copy of the recipe directory: conf/ copied; every other
    file (local/, steps/, utils/, run.sh, ...) an empty executable, so each Kaldi script it calls
    does nothing and succeeds; cmd.sh sets the *_cmd variables to run.pl; path.sh is empty;
    steps/nnet3/xconfig_to_configs.py keeps the xconfig file and arguments of each call;
  - PATH holds text tools that recipes compute values with (awk, sed, grep, cut, wc, seq, bc,
    perl, python, ...: the real ones) and STAND_IN_TOOLS (tree-info, feat-to-dim, am-info);
    any other command (Kaldi binaries, rm, cp, mv, queue.pl, sleep, date, hostname) does nothing
    and succeeds;
  - a file in data/ or exp/ (or the user's local.conf) that a text tool reads or the script
    sources, missing in the sandbox, is created from STAND_IN_FILES where its name is there
    (e.g. the x-vector recipes' egs/info/output_dim);
  - `exit`, `set -e` and `set -u` are disabled, so that the checks for input files the sandbox
    lacks do not stop the script before its xconfig; `mkdir` and `cd` stay inside the sandbox.

Each xconfig lists the stand-ins read before it (`stand_ins`). `python` is Kaldi's
tools/python/python: python2.7 where installed (`--recipe-python`; 29 scripts compute
`$(echo "print 0.5/$xent_regularize" | python)`, which Python 3 rejects), else python3. A
script that runs past `--shell-timeout` (waiting in a loop for a file) is stopped and counted
with the xconfigs it wrote before; one that never calls xconfig_to_configs.py with its defaults
is a "shell-fail". At kaldi-asr/kaldi f40076610 all 441 scripts run to their end (none is
stopped); one, chime4/s5_1ch's run_tdnn_lstm_1a.sh (default stage=20, past its network
stage), is a shell-fail. Then, for each xconfig:

  kaldi      runs Kaldi's own steps/nnet3/xconfig_to_configs.py (egs/wsj/s5/steps of the same
             tree, with an outside python3) up to the config files; its context check needs the
             nnet3-init binary and is left out. Calls with --existing-model are skipped.
  configs    (a) kaldi_avg.kaldi.xconfig.write_config_dir's init/ref/final.config and
             xconfig.expanded.1/2 equal Kaldi's line for line (the second header line, which
             echoes the command, left out), as tests/kaldi/test_xconfig_kaldi_fixtures.py compares
  build      (b) the ref.config network builds (kaldi_avg.model.build.config_text; an output
             node renamed as the call's `--nnet-edits` rename-node says, as Kaldi does for its
             context check) and wraps as a kaldi_avg.model.graph.NnetModule
  forward    (c) in training mode, on `--frames` output frames (one sequence, the model's left
             and right context around them, a random i-vector where the network has one; more
             frames where fewer give no output, e.g. an x-vector network's pooled output), with
             every parameter that is all zero at init randomised (Kaldi's output layers start at
             zero, which would stop every gradient below them), every output node (`output` and
             e.g. a chain network's `output-xent`) is computed and the sum of their squares
             backpropagated: the outputs and gradients finite
  backward   (d) every parameter has a gradient that is not exactly zero (the names of those
             that have none are the error)
  future     (e) where the network looks ahead (positive model right context, or a recurrent
             layer with a positive `delay`, e.g. a BLSTM's backward layers): in test mode, output
             frame 0 changes when the input frames after it change (with a backward recurrence,
             only those after the right context, which nothing but the recurrence carries back);
             `future_frames` gives the frames, or "n/a" for a causal network

A recipe is "supported" only when a to e pass. Each recipe runs in a forked child with a
timeout; any exception is recorded with its message.

    python benchmarks/xconfig_census.py --kaldi /tmp/kaldi [--out benchmarks/results] [--jobs 2]
        [--kaldi-commit SHA] [--filter REGEX] [--timeout 120] [--shell-timeout 60]
        [--recipe-python PATH] [--work-dir DIR]

(/tmp/kaldi from a checkout: `git --git-dir=<kaldi.git> archive HEAD egs | tar -x -C /tmp/kaldi`.)

Prints a table (status per recipe, counts by status and by failing layer type) and writes
<out>/xconfig_census.json.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import glob
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CONFIG_FILES = ("init.config", "ref.config", "final.config", "xconfig.expanded.1", "xconfig.expanded.2")
XCONFIG_TO_CONFIGS = "steps/nnet3/xconfig_to_configs.py"

# --------------------------------------------------------------------------- the recipes' shell
# Kaldi binaries a recipe reads a value from (the tree, the features): each stand-in's /bin/sh body.
STAND_IN_TOOLS = {
    "tree-info": "echo num-pdfs 3000; echo context-width 2; echo central-position 1",
    "am-info": "echo number of phones 100; echo number of pdfs 3000",
    "feat-to-dim": 'case "$*" in *ivector*) echo 100 ;; *) echo 40 ;; esac',
}
# Files of data/ and exp/ (and the user's local.conf) a recipe reads a value from, by name.
STAND_IN_FILES = {
    "output_dim": "3000",                                          # egs/info: x-vector speakers
    "feat_dim": "40",                                              # egs/info
    "pdf2num": " ".join(["100"] * 3000),                           # one count per pdf
    "utt2spk": "\n".join(f"utt{i} spk{i}" for i in range(3000)),   # speakers as the output dim
    "local.conf": "lang_list=(lang1 lang2)",                       # babel_multilang, opensat20
}
# Real tools that recipes compute values with (a recipe's `python` is --recipe-python).
TEXT_TOOLS = ("awk", "sed", "grep", "fgrep", "egrep", "cut", "head", "tail", "sort", "uniq", "wc", "tr",
              "paste", "seq", "bc", "expr", "cat", "basename", "dirname", "readlink", "realpath", "perl",
              "python3", "bash", "sh")

# Creates the missing operands that have a stand-in file (sourced by the prelude and the tool wrappers).
_STAND_IN_SH = r"""stand_in() {
  for f in "$@"; do
    case $f in -*|/*|*..*) continue ;; esac
    name=${f##*/}
    if [ ! -e "$f" ] && [ -f "$CENSUS_DIR/files/$name" ]; then
      case $f in */*) /bin/mkdir -p "${f%/*}" ;; esac
      /bin/cp "$CENSUS_DIR/files/$name" "$f" && echo "$name" >> "$CENSUS_LOG"
    fi
  done
}
"""

# Read by the recipe's bash before the script (BASH_ENV).
_PRELUDE = r""". "$CENSUS_DIR/stand_in.sh"
# The checks for Kaldi's input files, which the sandbox lacks, must not stop the script.
exit() { :; }
set() { builtin set "$@"; builtin set +e +u; }
# Anything not on PATH (Kaldi binaries, rm, cp, queue.pl, ...) does nothing and succeeds.
command_not_found_handle() { :; }
. () { stand_in "$1"; builtin . "$@"; }
source() { stand_in "$1"; builtin source "$@"; }
_inside() { case $(/usr/bin/realpath -m -- "$1") in "$CENSUS_RUN"|"$CENSUS_RUN"/*) return 0 ;; esac; return 1; }
mkdir() { local a; for a; do case $a in -*) ;; *) _inside "$a" && /bin/mkdir -p -- "$a" ;; esac; done; }
cd() { builtin cd "$@" 2>/dev/null; _inside "$PWD" || builtin cd "$CENSUS_RUN"; }
"""

# steps/nnet3/xconfig_to_configs.py: keeps each call's arguments, xconfig and stand-ins so far.
_CAPTURE_SH = r"""#!/bin/sh
n=1
while ! /bin/mkdir "$CENSUS_CAPTURE/$n" 2>/dev/null; do n=$((n + 1)); done
printf '%s\n' "$@" > "$CENSUS_CAPTURE/$n/args"
/bin/cp "$CENSUS_LOG" "$CENSUS_CAPTURE/$n/stand_ins" 2>/dev/null
while [ $# -gt 0 ]; do
  case $1 in
    --xconfig-file) x=$2; shift ;;
    --xconfig-file=*) x=${1#*=} ;;
  esac
  shift
done
/bin/cp "$x" "$CENSUS_CAPTURE/$n/network.xconfig" 2>/dev/null
exit 0
"""


def _write(path: str, text: str, executable: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if executable:
        os.chmod(path, 0o755)


def default_recipe_python() -> str:
    """What Kaldi's tools/extras/check_dependencies.sh makes `python`: python2.7 if it runs, else python3."""
    for name in ("python2.7", "python3"):
        path = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:" + os.environ.get("PATH", ""))
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    raise RuntimeError("no python2.7 or python3 for the recipes' `python`")


class Shell:
    """The sandbox in which bash runs the recipe scripts (under `root`)."""

    def __init__(self, root: str, recipe_python: str):
        self.root = os.path.abspath(root)
        self.bin = os.path.join(self.root, "bin")
        for tool in TEXT_TOOLS:
            self._wrap(tool, shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin"))
        self._wrap("python", recipe_python)
        for tool, body in STAND_IN_TOOLS.items():
            _write(os.path.join(self.bin, tool), f'#!/bin/sh\necho {tool} >> "$CENSUS_LOG"\n{body}\n', True)
        for name, text in STAND_IN_FILES.items():
            _write(os.path.join(self.root, "files", name), text + "\n")
        _write(os.path.join(self.root, "stand_in.sh"), _STAND_IN_SH)
        _write(os.path.join(self.root, "prelude.sh"), _PRELUDE)
        self._stub_trees: dict[str, str] = {}
        self._lock = threading.Lock()   # recipes are expanded in parallel threads

    def _wrap(self, tool: str, real: str | None) -> None:
        if real:
            _write(os.path.join(self.bin, tool), f'#!/bin/sh\n. "$CENSUS_DIR/stand_in.sh"\nstand_in "$@"\n'
                                                 f'exec {shlex.quote(real)} "$@"\n', True)

    def _stub_tree(self, directory: str) -> str:
        """An empty executable for every file under `directory` (shared by recipes that link to it)."""
        real = os.path.realpath(directory)
        with self._lock:
            if real not in self._stub_trees:
                out = os.path.join(self.root, "stubs", str(len(self._stub_trees)))
                seen = set()
                for dirpath, dirs, files in os.walk(real, followlinks=True):
                    seen.add(os.path.realpath(dirpath))
                    dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) not in seen]
                    for name in files:
                        stub = _CAPTURE_SH if name == os.path.basename(XCONFIG_TO_CONFIGS) else ""
                        _write(os.path.join(out, os.path.relpath(os.path.join(dirpath, name), real)), stub, True)
                self._stub_trees[real] = out
            return self._stub_trees[real]

    def _sandbox(self, recipe_dir: str, run: str) -> None:
        os.makedirs(run)
        for name in sorted(os.listdir(recipe_dir)):
            path = os.path.join(recipe_dir, name)
            if name == "conf" and os.path.isdir(path):
                shutil.copytree(path, os.path.join(run, name))
            elif os.path.isdir(path):
                os.symlink(self._stub_tree(path), os.path.join(run, name))
            else:
                _write(os.path.join(run, name), "", True)
        _write(os.path.join(run, "cmd.sh"), "export train_cmd=run.pl decode_cmd=run.pl cuda_cmd=run.pl "
                                             "mkgraph_cmd=run.pl cmd=run.pl\n")
        _write(os.path.join(run, "path.sh"), "")
        if not os.path.exists(os.path.join(run, XCONFIG_TO_CONFIGS)):   # a recipe without steps/
            _write(os.path.join(run, XCONFIG_TO_CONFIGS), _CAPTURE_SH, True)

    def expand(self, script: str, recipe_dir: str, name: str, timeout: float) -> tuple[list[dict], str]:
        """Runs `script` with bash in a sandbox of `recipe_dir`: one dict per xconfig_to_configs.py
        call (args, xconfig_file, xconfig or None, stand_ins), and a note (a timeout, or the end
        of bash's stderr when no call came)."""
        box = os.path.join(self.root, "runs", re.sub(r"[^\w.-]+", "_", name))
        run, capture = os.path.join(box, "run"), os.path.join(box, "capture")
        self._sandbox(recipe_dir, run)
        os.makedirs(capture)
        _write(os.path.join(box, "stand_ins.log"), "")
        env = {"PATH": self.bin, "HOME": box, "TMPDIR": box, "LC_ALL": "C",
               "BASH_ENV": os.path.join(self.root, "prelude.sh"), "CENSUS_DIR": self.root,
               "CENSUS_RUN": os.path.realpath(run), "CENSUS_CAPTURE": capture,
               "CENSUS_LOG": os.path.join(box, "stand_ins.log")}
        note = ""
        with open(os.path.join(box, "stderr"), "w+") as err:
            p = subprocess.Popen([shutil.which("bash"), os.path.abspath(script)], cwd=run, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                note = f"bash stopped after {timeout:.0f} s"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)   # and what it left running in the background
            p.wait()
            calls = [self._call(os.path.join(capture, n))
                     for n in sorted(os.listdir(capture), key=int)]
            if not calls and not note:
                err.seek(0)
                note = " | ".join(err.read().strip().split("\n")[-3:])[-400:]
        return calls, note

    @staticmethod
    def _call(path: str) -> dict:
        with open(os.path.join(path, "args")) as f:
            args = f.read().split("\n")[:-1]
        xfile = option(args, "--xconfig-file")
        xconfig = None
        if os.path.exists(os.path.join(path, "network.xconfig")):
            with open(os.path.join(path, "network.xconfig"), errors="replace") as f:
                xconfig = f.read()
        stand_ins = []
        if os.path.exists(os.path.join(path, "stand_ins")):
            with open(os.path.join(path, "stand_ins")) as f:
                stand_ins = sorted(set(f.read().split()))
        return {"args": args, "xconfig_file": xfile, "xconfig": xconfig, "stand_ins": stand_ins}


def option(args: list[str], name: str) -> str | None:
    """The value of `name` in a command's arguments (`--name value` or `--name=value`)."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


# --------------------------------------------------------------------------- discovery
def recipe_scripts(kaldi: str) -> list[str]:
    """The scripts under egs/*/*/local/ that call xconfig_to_configs.py (symlinks left out)."""
    out, seen = [], set()
    for path in sorted(glob.glob(os.path.join(kaldi, "egs", "*", "*", "local", "**", "*.sh"), recursive=True)):
        real = os.path.realpath(path)
        if real in seen or os.path.islink(path) or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, errors="replace") as f:
            if XCONFIG_TO_CONFIGS in f.read():
                out.append(path)
    return out


def recipe_dir(kaldi: str, script: str) -> str:
    """egs/<corpus>/<s5>, the directory a script runs from."""
    egs = os.path.join(kaldi, "egs")
    return os.path.join(egs, *os.path.relpath(script, egs).split(os.sep)[:2])


def collect(kaldi: str, shell: Shell, scripts: list[str], jobs: int, timeout: float) -> list[dict]:
    """One record per xconfig_to_configs.py call of each script (`recipe`: the script, then #k
    where it has several calls), with its xconfig, or the reason it is not checked."""
    egs = os.path.join(kaldi, "egs")

    def expand(path):
        rel = os.path.relpath(path, egs)
        return rel, shell.expand(path, recipe_dir(kaldi, path), rel, timeout)

    recipes = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for rel, (calls, note) in pool.map(expand, scripts):
            kind = "chain" if "/chain" in rel else "nnet3"
            if not calls:
                recipes.append({"recipe": rel, "kind": kind, "status": "shell-fail", "stage": "shell",
                                "error": f"no xconfig_to_configs.py call with the script's defaults ({note})"})
            for k, call in enumerate(calls):
                r = {"recipe": rel if len(calls) == 1 else f"{rel}#{k + 1}", "kind": kind,
                     "xconfig_file": call["xconfig_file"], "stand_ins": call["stand_ins"],
                     "xconfig": call["xconfig"], "status": None}
                if note:
                    r["shell_note"] = note
                if option(call["args"], "--nnet-edits"):
                    r["nnet_edits"] = option(call["args"], "--nnet-edits")
                if option(call["args"], "--existing-model"):
                    r.update(status="skipped", stage="existing-model", error="passes --existing-model")
                elif call["xconfig"] is None:
                    r.update(status="shell-fail", stage="shell", error=f"no xconfig file {call['xconfig_file']}")
                recipes.append(r)
    return recipes


# --------------------------------------------------------------------------- per recipe
_KALDI_RUNNER = """
import sys
steps = sys.argv[1]
sys.path.insert(0, steps + '/nnet3'); sys.path.insert(0, steps)
sys.argv = [steps + '/nnet3/xconfig_to_configs.py', '--xconfig-file', 'network.xconfig', '--config-dir', '.']
import xconfig_to_configs as x
args = x.get_args()
x.backup_xconfig_file(args.xconfig_file, args.config_dir)
layers = x.xparser.read_xconfig_file(args.xconfig_file, [])
x.write_expanded_xconfig_files(args.config_dir, layers)
x.write_config_files(args.config_dir, layers)
"""


def run_kaldi(steps: str, xconfig: str, workdir: str, python: str, timeout: float) -> tuple[bool, str]:
    """Kaldi's xconfig_to_configs.py (without the nnet3-init context check) in `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    # Layers such as idct-layer write their matrix at config time (relative to the recipe's dir).
    for path in set(re.findall(r"=([\w./-]+)\.mat\b", xconfig)):
        if not os.path.isabs(path):
            os.makedirs(os.path.join(workdir, os.path.dirname(path)), exist_ok=True)
    with open(os.path.join(workdir, "network.xconfig"), "w") as f:
        f.write(xconfig)
    p = subprocess.run([python, "-W", "ignore", "-c", _KALDI_RUNNER, steps], cwd=workdir,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        err = [ln for ln in p.stderr.strip().split("\n") if ln.strip()]
        return False, err[-1] if err else f"exit {p.returncode}"
    return True, ""


def _lines(path: str) -> list[str]:
    with open(path) as f:
        lines = f.read().split("\n")
    return lines[:1] + lines[2:]


def compare_configs(kaldi_dir: str, our_dir: str) -> None:
    """(a): our config files equal Kaldi's, but for the header line that echoes the command."""
    from kaldi_avg.kaldi.xconfig import write_config_dir

    write_config_dir(os.path.join(kaldi_dir, "network.xconfig"), our_dir, {})
    for name in CONFIG_FILES:
        theirs, ours = os.path.join(kaldi_dir, name), os.path.join(our_dir, name)
        if os.path.exists(theirs) != os.path.exists(ours):
            raise AssertionError(f"{name}: written by {'Kaldi' if os.path.exists(theirs) else 'us'} only")
        if not os.path.exists(theirs):
            continue
        a, b = _lines(theirs), _lines(ours)
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            want = a[k] if k < len(a) else "<end>"
            got = b[k] if k < len(b) else "<end>"
            raise AssertionError(f"{name} line {k + 2}: Kaldi {want!r}, ours {got!r}")


def _layer_of(name: str, layers: dict[str, str]) -> str | None:
    """The layer type of a component or node name such as `lstm1.W_i-xr` or `tdnnf2.linear`."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in layers:
            return layers[".".join(parts[:k])]
    return None


def kaldi_layer_types(kaldi_dir: str) -> dict[str, str]:
    """name -> layer type, from Kaldi's xconfig.expanded.1."""
    out = {}
    for line in _lines(os.path.join(kaldi_dir, "xconfig.expanded.1")):
        m = re.match(r"\s*(\S+)\s.*\bname=(\S+)", line)
        if m and not line.startswith("#"):
            out[m.group(2)] = m.group(1)
    return out


def has_backward_recurrence(kaldi_dir: str) -> bool:
    """Whether a recurrent (LSTM or GRU) layer of Kaldi's xconfig.expanded.2 has a positive `delay`,
    as a BLSTM's backward layers do (other layers' `delay` only shifts their input)."""
    return any(re.match(r"\s*\S*(lstm|gru)\S*\s.*(?<=\s)delay=\+?[1-9]", line)
               for line in _lines(os.path.join(kaldi_dir, "xconfig.expanded.2")))


def build_reference(xconfig: str, nnet_edits: str | None):
    """ref.config's network (build_nnet's), with the script's `--nnet-edits` rename-node edits of
    output nodes applied, as Kaldi applies them for its context check (e.g. output-0 -> output)."""
    import numpy as np

    from kaldi_avg.kaldi.nnet3.nnet import Nnet
    from kaldi_avg.model.build import config_text

    text = config_text(xconfig, "network.xconfig", "ref")
    for old, new in re.findall(r"rename-node\s+old-name=(\S+)\s+new-name=(\S+)", nnet_edits or ""):
        text, n = re.subn(rf"^(output-node name=){re.escape(old)}(?=\s)", rf"\g<1>{new}", text, flags=re.M)
        if n != 1:
            raise AssertionError(f"--nnet-edits renames {old}, which is not an output node")
    return Nnet.from_config(text, "network.xconfig (ref.config)", rng=np.random.default_rng(0))


def _failing_layer(message: str, xconfig: str, layers: dict[str, str]) -> str:
    m = re.search(r"unknown layer type '([^']+)'", message)
    if m:
        return m.group(1)
    m = re.search(r":(\d+): ", message)
    if m:
        lines = xconfig.split("\n")
        k = int(m.group(1)) - 1
        if 0 <= k < len(lines) and lines[k].split():
            return lines[k].split()[0]
    for m in re.finditer(r"(?:name=|component |node |')([\w.\-]+)", message):
        t = _layer_of(m.group(1), layers)
        if t:
            return t
    m = re.search(r"type=?'?(\w+Component)", message) or re.search(r"(\w+Component)", message)
    if m:
        return m.group(1)
    return "?"


# --------------------------------------------------------------------------- the network checks
def output_modules(nnet, module) -> dict:
    """An NnetModule per output node (`output`, and e.g. `output-xent`), all computing with
    `module`'s parameters (a NnetModule computes one output)."""
    from kaldi_avg.model.graph import NnetModule

    out = {module.output_name: module}
    for node in nnet.output_nodes():
        if node.name not in out:
            out[node.name] = NnetModule(nnet, output=node.name)
            out[node.name].ops = module.ops
    return out


def output_frames(nnet, left: int, right: int, frames: int) -> int:
    """The fewest frames from `frames` on that every output is computable on, with the context
    around them."""
    from kaldi_avg.kaldi.nnet3.context import computable_ranges

    def computable(n):
        ranges = computable_ranges(nnet, -left, n - 1 + right)
        return all(ranges[o.name][0] <= 0 and ranges[o.name][1] >= n - 1 for o in nnet.output_nodes())
    return next((n for n in range(frames, 800) if computable(n)), frames)


def _param_name(name: str) -> str:
    """`ops.tdnn1:affine.linear_params` (NnetModule's name) as `tdnn1.affine/linear_params`."""
    _, key, param = name.split(".")
    return f"{key.replace(':', '.')}/{param}"


def randomize_zero_parameters(module, generator) -> list[str]:
    """Gives every parameter that is all zero random values (Kaldi's output layers start at zero,
    which would stop every gradient below them); returns their names."""
    import torch

    names = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.numel() and not p.any():
                scale = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
                names.append(_param_name(name))
    return names


def forward_backward(modules: dict, feats, left: int, frames: int, ivectors) -> None:
    """(c): every output in training mode, the sum of their squares backpropagated."""
    import torch

    outs = {}
    for name, m in modules.items():
        m.train()
        outs[name] = m(feats, left_context=left, num_frames=frames, ivectors=ivectors)
        if tuple(outs[name].shape[:2]) != (feats.shape[0], frames):
            raise AssertionError(f"{name}: output shape {tuple(outs[name].shape)}")
        if not torch.isfinite(outs[name]).all():
            raise AssertionError(f"{name}: non-finite output")
    sum(o.pow(2).sum() for o in outs.values()).backward()


def parameters_without_gradient(module) -> list[str]:
    """(d): the parameters whose gradient is missing or exactly zero (an error: non-finite ones)."""
    import torch

    bad = [_param_name(n) for n, p in module.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise AssertionError(f"non-finite gradients in {bad[:3]}")
    return [_param_name(n) for n, p in module.named_parameters() if p.grad is None or not p.grad.any()]


def check_future_frames(module, feats, left: int, right: int, frames: int, ivectors,
                        backward_recurrence: bool) -> dict:
    """(e): in test mode, output frame 0 changes when the input frames after it change: all of
    them, or with a backward recurrence those after the right context, which only the recurrence
    carries back. (Many frames, as a single one at the edge of the context may reach the output
    only through units that a randomly initialised network saturates.) Raises if it stays the same."""
    import torch

    first, last = (right + 1 if backward_recurrence else 1), feats.shape[1] - 1 - left
    changed = feats.clone()
    noise = torch.randn(changed[:, left + first:].shape, generator=torch.Generator().manual_seed(1))
    changed[:, left + first:] += noise
    module.eval()
    with torch.no_grad():
        a = module(feats, left_context=left, num_frames=frames, ivectors=ivectors)
        b = module(changed, left_context=left, num_frames=frames, ivectors=ivectors)
    if torch.equal(a[:, 0], b[:, 0]):
        raise AssertionError(f"output frame 0 does not change with input frames {first}..{last}")
    return {"output_frame": 0, "input_frames": [first, last]}


def check_network(nnet, frames: int, backward_recurrence: bool, res: dict, seed: int = 0) -> None:
    """(c), (d), (e) on a built network; results go into `res`, whose "stage" names the check under
    way when one raises."""
    import torch

    from kaldi_avg.kaldi.nnet3.context import model_context
    from kaldi_avg.model.graph import NnetModule

    res["stage"] = "build"
    module = NnetModule(nnet)
    res["num_params"] = int(sum(p.numel() for p in module.parameters()))
    res["stage"] = "forward"
    left, right = model_context(nnet)
    res["context"] = [int(left), int(right)]
    frames = res["frames"] = output_frames(nnet, left, right, frames)
    g = torch.Generator().manual_seed(seed)
    res["randomized"] = randomize_zero_parameters(module, g)
    inputs = {n.name: n.dim for n in nnet.input_nodes()}
    feats = torch.randn(1, left + frames + right, inputs["input"], generator=g)
    other = [d for n, d in inputs.items() if n != "input"]
    ivectors = torch.randn(1, other[0], generator=g) if other else None
    forward_backward(output_modules(nnet, module), feats, left, frames, ivectors)
    res["stage"] = "backward"
    missing = parameters_without_gradient(module)
    if missing:
        raise AssertionError(f"{len(missing)} parameters without gradient: {', '.join(missing)}")
    res["stage"] = "future"
    future = "n/a"
    if right > 0 or backward_recurrence:
        future = check_future_frames(module, feats, left, right, frames, ivectors, backward_recurrence)
    res["future_frames"] = future


def check_recipe(xconfig: str, nnet_edits: str | None, steps: str, workdir: str, python: str, frames: int,
                 timeout: float) -> dict:
    """Kaldi accepts? then (a) configs, (b) build, (c) forward, (d) backward, (e) future frames.
    Runs in a child process."""
    import torch

    torch.set_num_threads(1)
    res = {"status": None, "stage": "kaldi", "error": None, "failing_layer": None}
    kdir, odir = os.path.join(workdir, "kaldi"), os.path.join(workdir, "ours")
    ok, err = run_kaldi(steps, xconfig, kdir, python, timeout)
    if not ok:
        res.update(status="kaldi-rejects", error=err)
        return res
    with open(os.path.join(kdir, "final.config")) as f:
        fractional = re.search(r"\S*dim=\d+\.\d+", f.read())
    if fractional:
        # Kaldi's own defaults (e.g. an LSTMP's cell-dim/4) are floats under Python 3; nnet3-init
        # rejects such a config (the recipes predate Python 3).
        res.update(status="kaldi-rejects", stage="nnet3-init",
                   error=f"Kaldi under Python 3 writes {fractional.group(0)} (nnet3-init rejects it)")
        return res
    layers = kaldi_layer_types(kdir)
    res["layer_types"] = sorted(set(layers.values()))
    try:
        res["stage"] = "configs"
        compare_configs(kdir, odir)
        res["stage"] = "build"
        check_network(build_reference(xconfig, nnet_edits), frames, has_backward_recurrence(kdir), res)
    except Exception as e:  # any failure is a census result
        msg = f"{type(e).__name__}: {e}".split("\n")[0][:600]
        res.update(status=f"{res['stage']}-fail", error=msg, failing_layer=_failing_layer(msg, xconfig, layers))
        if res["stage"] in ("forward", "backward", "future"):
            res["traceback"] = traceback.format_exc(limit=-3)[-1200:]
        return res
    res.update(status="supported", stage=None)
    return res


def _child(conn, *args):
    try:
        workdir = args[3]
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)   # an idct-layer writes its matrix relative to the working directory, as Kaldi's does
        conn.send(check_recipe(*args))
    except BaseException as e:
        conn.send({"status": "error", "stage": "harness", "error": f"{type(e).__name__}: {e}"[:400],
                   "failing_layer": "?"})
    finally:
        conn.close()


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kaldi", required=True, help="kaldi-asr/kaldi checkout or extracted tree (needs egs/)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per recipe")
    ap.add_argument("--shell-timeout", type=float, default=60.0, help="seconds per script under bash")
    ap.add_argument("--frames", type=int, default=16, help="output frames of the forward check")
    ap.add_argument("--filter", default=None, help="only scripts whose path under egs/ matches this regex")
    ap.add_argument("--python", default=shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3",
                    help="the python3 that runs Kaldi's xconfig_to_configs.py")
    ap.add_argument("--recipe-python", default=None,
                    help="the recipes' `python` (default: python2.7 if it runs, else python3, as Kaldi's "
                         "tools/extras/check_dependencies.sh sets it up)")
    ap.add_argument("--kaldi-commit", default=None,
                    help="the tree's commit, recorded in the JSON (default: git rev-parse in --kaldi)")
    ap.add_argument("--work-dir", default=None, help="keep the sandboxes and config dirs here (default: a temp dir)")
    args = ap.parse_args(argv)

    kaldi = os.path.abspath(args.kaldi)
    steps = os.path.join(kaldi, "egs", "wsj", "s5", "steps")
    if not os.path.exists(os.path.join(steps, "nnet3", "xconfig_to_configs.py")):
        ap.error(f"{steps}/nnet3/xconfig_to_configs.py not found")
    t_start = time.time()
    work = args.work_dir or tempfile.mkdtemp(prefix="xconfig_census.")
    recipe_python = args.recipe_python or default_recipe_python()
    scripts = [s for s in recipe_scripts(kaldi)
               if not args.filter or re.search(args.filter, os.path.relpath(s, os.path.join(kaldi, "egs")))]
    recipes = collect(kaldi, Shell(os.path.join(work, "shell"), recipe_python), scripts, args.jobs,
                      args.shell_timeout)
    t_shell = time.time() - t_start
    run_checks([r for r in recipes if r["status"] is None], steps, os.path.join(work, "checks"), args)
    for r in recipes:
        if "seconds" not in r:
            _print_row(r)
    summary = summarize(recipes)
    summary.update(shell_seconds=round(t_shell, 1), seconds=round(time.time() - t_start, 1))
    _print_summary(summary)
    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, "xconfig_census.json")
    for r in recipes:
        r.pop("xconfig", None)
    version = subprocess.run([recipe_python, "--version"], capture_output=True, text=True)
    with open(out_path, "w") as f:
        json.dump({"kaldi": kaldi, "kaldi_commit": args.kaldi_commit or _kaldi_commit(kaldi),
                   "recipe_python": (version.stdout + version.stderr).strip(), "frames": args.frames,
                   "stand_in_tools": STAND_IN_TOOLS,
                   "stand_in_files": {k: v if len(v) < 80 else v[:60] + " ..." for k, v in STAND_IN_FILES.items()},
                   "summary": summary, "recipes": recipes}, f, indent=1)
    print(f"wrote {out_path}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_checks(todo: list[dict], steps: str, work: str, args) -> None:
    """check_recipe for each record, `args.jobs` forked children at a time, each with a timeout."""
    import torch  # noqa: F401 - imported once here, so the forked children start fast

    ctx = multiprocessing.get_context("fork")
    todo = list(todo)
    running: dict = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            r = todo.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            wd = os.path.join(work, re.sub(r"[^\w.#-]+", "_", r["recipe"]))
            p = ctx.Process(target=_child, args=(child, r["xconfig"], r.get("nnet_edits"), steps, wd, args.python,
                                                 args.frames, args.timeout))
            p.start()
            child.close()
            running[parent] = (p, r, time.time())
        for conn in multiprocessing.connection.wait(list(running), timeout=1.0):
            p, r, t0 = running.pop(conn)
            try:
                r.update(conn.recv())
            except EOFError:
                p.join(5)
                r.update(status="error", stage="harness", error=f"child died (exit {p.exitcode})", failing_layer="?")
            r["seconds"] = round(time.time() - t0, 2)
            p.join(5)
            conn.close()
            _print_row(r)
        for conn, (p, r, t0) in list(running.items()):
            if time.time() - t0 > args.timeout:
                p.kill()
                p.join()
                running.pop(conn)
                conn.close()
                r.update(status="timeout", stage="timeout", error=f"over {args.timeout:.0f} s", failing_layer="?",
                         seconds=round(time.time() - t0, 2))
                _print_row(r)


def _kaldi_commit(kaldi: str) -> str | None:
    try:
        p = subprocess.run(["git", "-C", kaldi, "rev-parse", "HEAD"], capture_output=True, text=True)
        return p.stdout.strip() or None
    except OSError:
        return None


NOT_CHECKED = ("kaldi-rejects", "skipped", "shell-fail")


def summarize(recipes: list[dict]) -> dict:
    status = collections.Counter(r["status"] for r in recipes)
    accepted = [r for r in recipes if r["status"] not in NOT_CHECKED]
    failing = collections.Counter(r.get("failing_layer") or "?" for r in accepted if r["status"] != "supported")
    by_kind = {}
    for kind in ("nnet3", "chain"):
        acc = [r for r in accepted if r["kind"] == kind]
        by_kind[kind] = {"accepted": len(acc), "supported": sum(r["status"] == "supported" for r in acc)}
    future = collections.Counter("n/a" if r.get("future_frames") == "n/a" else "pass"
                                 for r in recipes if r["status"] == "supported")
    stand_ins = collections.Counter(s for r in recipes for s in r.get("stand_ins", []))
    return {"recipes": len(recipes), "kaldi_accepts": len(accepted),
            "supported": status.get("supported", 0),
            "supported_distinct_xconfigs": len({r["xconfig"] for r in accepted if r["status"] == "supported"}),
            "by_status": dict(status.most_common()), "failing_layer_types": dict(failing.most_common()),
            "by_kind": by_kind, "future_frames": dict(future),
            "stand_ins_used": dict(stand_ins.most_common()),
            "shell_stopped": sum("shell_note" in r for r in recipes)}


def _print_row(r: dict) -> None:
    err = "" if r["status"] == "supported" else f"  [{r.get('failing_layer') or ''}] {r.get('error') or ''}"
    print(f"{r['status']:<15} {r['recipe']:<70}{err[:160]}", flush=True)


def _print_summary(s: dict) -> None:
    pct = 100.0 * s["supported"] / s["kaldi_accepts"] if s["kaldi_accepts"] else math.nan
    print()
    print(f"xconfigs (xconfig_to_configs.py calls): {s['recipes']}; Kaldi accepts: {s['kaldi_accepts']}; "
          f"supported: {s['supported']} ({pct:.1f}%)")
    print("by status:  " + ", ".join(f"{k} {v}" for k, v in s["by_status"].items()))
    print("by kind:    " + ", ".join(f"{k} {v['supported']}/{v['accepted']}" for k, v in s["by_kind"].items()))
    print("future frames (supported): " + ", ".join(f"{k} {v}" for k, v in s["future_frames"].items()))
    print("failing layer types (recipes Kaldi accepts):")
    for k, v in s["failing_layer_types"].items():
        print(f"  {v:5d}  {k}")
    print("stand-ins read: " + ", ".join(f"{k} ({v})" for k, v in s["stand_ins_used"].items()))
    print(f"shell: {s['shell_seconds']} s; scripts stopped at the shell timeout: {s['shell_stopped']}")


if __name__ == "__main__":
    sys.exit(main())
