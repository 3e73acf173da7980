"""How many of Kaldi's own recipe networks kaldi-avg supports: a census over the xconfig heredocs
of a kaldi-asr/kaldi tree's egs.

It walks `egs/*/*/local/nnet3/tuning/*.sh`, `egs/*/*/local/chain/tuning/*.sh` and every other
`egs/*/*/local/**/run_*.sh` (and `*tdnn*.sh`, `*lstm*.sh` training scripts) that mentions
`xconfig` (symlinked scripts are counted once, under their target), takes every
`cat <<EOF > .../*xconfig` heredoc, fills its shell variables with the script's own defaults
(the `var=value` assignments above the heredoc, in order; `$(echo "print (0.5/$x)" | python)`,
`$(python -c ...)`, `$(perl -e "print ...")`, `$(echo $x | cut -d, -f1)` and `$((...))` are
evaluated; values a script reads from files or tools, e.g. `num_targets=$(tree-info ...)`, get a
stand-in (see STAND_INS) and are listed), and then

  kaldi      runs Kaldi's own steps/nnet3/xconfig_to_configs.py (egs/wsj/s5/steps of the same
             tree, with an outside python3) up to the config files; its context check needs the
             nnet3-init binary and is left out. Scripts that pass --existing-model, or that append
             to the xconfig in a shell loop, are skipped.
  configs    (a) kaldi_avg.kaldi.xconfig.write_config_dir's init/ref/final.config and
             xconfig.expanded.1/2 equal Kaldi's line for line (the second header line, which
             echoes the command, left out), as tests/kaldi/test_xconfig_kaldi_fixtures.py compares
  build      (b) the ref.config network builds (kaldi_avg.model.build.build_nnet) and wraps as a
             kaldi_avg.model.graph.NnetModule on the node `output`
  forward    (c) forward + backward in training mode on a few random frames (one sequence, the
             model's left and right context around them, a random i-vector where the network has
             one), the loss and the gradients finite; more frames where the network computes no
             output from fewer (an x-vector network's pooled output needs one frame of its
             frame-level layers, hence their whole context, which Kaldi's context does not count)

A recipe is "supported" only when a, b and c pass. Each recipe runs in a forked child with a
timeout; any exception is recorded with its message.

    python benchmarks/xconfig_census.py --kaldi /tmp/kaldi [--out benchmarks/results] [--jobs 2]
        [--kaldi-commit SHA] [--filter REGEX] [--timeout 120] [--work-dir DIR]

(/tmp/kaldi from a checkout: `git --git-dir=<kaldi.git> archive HEAD egs | tar -x -C /tmp/kaldi`.)

Prints a table (status per recipe, counts by status and by failing layer type) and writes
<out>/xconfig_census.json.
"""
from __future__ import annotations

import argparse
import ast
import collections
import glob
import json
import math
import multiprocessing
import multiprocessing.connection
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CONFIG_FILES = ("init.config", "ref.config", "final.config", "xconfig.expanded.1", "xconfig.expanded.2")

# Values the scripts read from files or tools at run time (the tree, the features), by variable.
STAND_INS = {
    "num_targets": "3000", "num_leaves": "3000", "num_pdfs": "3000", "num_pdf": "3000",
    "num_chain_targets": "3000", "num_targets_ali": "3000", "num_ce_targets": "3000",
    "feat_dim": "40", "ivector_dim": "100", "input_dim": "40", "num_phones": "100",
    "num_langs": "2", "cnn_opts": "",
}

# Commands whose output a script puts straight into the xconfig (e.g. `dim=`feat-to-dim ...``).
COMMAND_STAND_INS = {"feat-to-dim": "40", "tree-info": "3000", "am-info": "3000"}
USED_COMMAND_STAND_INS: dict[str, str] = {}


class Unresolved(str):
    """A value that could not be worked out (the text says why)."""


# --------------------------------------------------------------------------- shell subset
_ASSIGN = re.compile(r"^\s*(?:export\s+|local\s+|readonly\s+)?([A-Za-z_]\w*)=(.*)$")
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_]\w*)\2")
_COND_ASSIGN = re.compile(r"^\s*\$\{?(\w+)\}?\s*&&\s*([A-Za-z_]\w*)=(\S*)\s*$")
_NAME = re.compile(r"[A-Za-z_]\w*")


def _matching(text: str, i: int, open_ch: str = "(", close_ch: str = ")") -> int:
    """Index of the bracket closing the one at text[i]."""
    depth = 0
    quote = None
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced {open_ch!r} in {text!r}")


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def _arith(expr: str, int_div: bool = False):
    """Evaluates a numeric expression (numbers, + - * / // % **, int(), float(), round())."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = ev(node.left), ev(node.right)
            if int_div and isinstance(node.op, ast.Div):
                return int(a / b)
            return _BINOPS[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("int", "float", "round") and len(node.args) == 1):
            return {"int": int, "float": float, "round": round}[node.func.id](ev(node.args[0]))
        raise ValueError(f"not simple arithmetic: {expr!r}")
    return ev(ast.parse(expr.strip(), mode="eval"))


def _strip_quotes(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _command(cmd: str, env: dict) -> str:
    """The output of the few command substitutions the recipes use to compute values."""
    cmd = expand(cmd, env, in_heredoc=True)
    if isinstance(cmd, Unresolved):
        return cmd
    cmd = cmd.strip()
    m = (re.fullmatch(r"echo\s+(['\"]?)print\s*(.*?)\1\s*\|\s*python[23]?", cmd, re.S)
         or re.fullmatch(r"python[23]?\s+-c\s+(['\"]?)print\s*(.*?)\1", cmd, re.S))
    if m:
        return str(_arith(m.group(2)))
    m = re.fullmatch(r"perl\s+-e\s+(['\"])print\s+(?:STDOUT\s+)?(.*?);?\s*\1", cmd, re.S)
    if m:
        v = _arith(m.group(2))
        return str(int(v)) if float(v).is_integer() else "%.15g" % v
    m = re.fullmatch(r"echo\s+(\S+)\s*\|\s*cut\s+-d\s*(\S)\s+-f\s*(\d+)", cmd)
    if m:
        parts = _strip_quotes(m.group(1)).split(_strip_quotes(m.group(2)))
        k = int(m.group(3))
        return parts[k - 1] if k <= len(parts) else ""
    tool = cmd.split()[0] if cmd.split() else ""
    if tool in COMMAND_STAND_INS:
        value = COMMAND_STAND_INS[tool]
        if tool == "feat-to-dim" and "ivector" in cmd:
            value = "100"
        USED_COMMAND_STAND_INS[tool] = value
        return value
    return Unresolved(f"$({cmd})")


def expand(text: str, env: dict, in_heredoc: bool = False) -> str:
    """Expands $var, ${var}, ${var:-default}, $(cmd) and $((expr)) (and quotes outside heredocs).
    Returns an Unresolved when a needed value is unknown."""
    out = []
    i = 0
    quote = None
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and quote != "'":
            out.append(text[i + 1])
            i += 2
            continue
        if not in_heredoc and c in "'\"" and (quote is None or quote == c):
            quote = None if quote == c else c
            i += 1
            continue
        if c == "`" and quote != "'" and "`" in text[i + 1:]:
            j = text.index("`", i + 1)
            try:
                val = _command(text[i + 1:j], env)
            except (ValueError, SyntaxError, ZeroDivisionError) as e:
                val = Unresolved(f"`{text[i + 1:j]}`: {e}")
            if isinstance(val, Unresolved):
                return val
            out.append(val)
            i = j + 1
            continue
        if c == "$" and quote != "'" and i + 1 < len(text):
            nxt = text[i + 1]
            if text.startswith("$((", i):
                j = _matching(text, i + 1)
                inner = expand(text[i + 3:j - 1], env)
                if isinstance(inner, Unresolved):
                    return inner
                try:
                    inner = _NAME.sub(lambda m: env.get(m.group(0), "0"), inner)
                    out.append(str(int(_arith(inner, int_div=True))))
                except (ValueError, SyntaxError, ZeroDivisionError) as e:
                    return Unresolved(f"$(({inner})): {e}")
                i = j + 1
                continue
            if nxt == "(":
                j = _matching(text, i + 1)
                try:
                    val = _command(text[i + 2:j], env)
                except (ValueError, SyntaxError, ZeroDivisionError) as e:
                    val = Unresolved(f"$({text[i + 2:j]}): {e}")
                if isinstance(val, Unresolved):
                    return val
                out.append(val)
                i = j + 1
                continue
            if nxt == "{":
                j = text.index("}", i)
                inner = text[i + 2:j]
                m = re.fullmatch(r"([A-Za-z_]\w*)(?:(:[-+])(.*))?", inner)
                if not m:
                    return Unresolved(f"${{{inner}}}")
                name, op, word = m.groups()
                val = env.get(name)
                if op == ":+":
                    val = expand(word, env) if val else ""
                elif op == ":-" and not val:
                    val = expand(word, env)
                if val is None:
                    return Unresolved(f"${name} (unset)")
                if isinstance(val, Unresolved):
                    return Unresolved(f"${name}: {val}")
                out.append(val)
                i = j + 1
                continue
            m = _NAME.match(text, i + 1)
            if m:
                val = env.get(m.group(0))
                if val is None:
                    return Unresolved(f"${m.group(0)} (unset)")
                if isinstance(val, Unresolved):
                    return Unresolved(f"${m.group(0)}: {val}")
                out.append(val)
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _value_word(rest: str) -> str:
    """The shell word after `name=` (up to unquoted blank, ;, &, |, or a comment)."""
    i = 0
    quote = None
    while i < len(rest):
        c = rest[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c == "\\":
            i += 2
            continue
        elif c in "'\"":
            quote = c
        elif c == "$" and rest.startswith("$(", i):
            i = _matching(rest, i + 1) + 1
            continue
        elif c in " \t;&|#)":
            break
        i += 1
    return rest[:i]


def find_xconfigs(script_text: str) -> list[dict]:
    """The xconfig heredocs of a script, each with the variables as they stand above it."""
    lines = script_text.split("\n")
    env: dict[str, str] = {}
    standins: dict[str, str] = {}
    found = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HEREDOC.search(line)
        if m and not line.lstrip().startswith("#"):
            delim = m.group(3)
            j = i + 1
            while j < len(lines) and lines[j].strip() != delim:
                j += 1
            target = re.search(r">\s*(\S*xconfig)\b", line)
            if target and "cat" in line:
                found.append({"line": i + 1, "body": lines[i + 1:j], "quoted": bool(m.group(2)),
                              "env": dict(env), "stand_ins": dict(standins), "target": target.group(1)})
            i = j + 1
            continue
        m = _COND_ASSIGN.match(line)
        if m and env.get(m.group(1)) == "true":
            env[m.group(2)] = expand(m.group(3), env)
        m = _ASSIGN.match(line)
        if m and not line.lstrip().startswith("#"):
            name, rest = m.groups()
            try:
                word = _value_word(rest)
                env[name] = expand(word, env)
                if isinstance(env[name], Unresolved) and name in STAND_INS:
                    env[name] = standins[name] = STAND_INS[name]
            except (ValueError, IndexError) as e:
                env[name] = Unresolved(f"{rest.strip()}: {e}")
        i += 1
    return found


def fill_xconfig(doc: dict) -> tuple[str, list[str], dict[str, str], list[str]]:
    """The heredoc's text with its variables filled, the unresolved references, the stand-ins
    used and the variables the script never sets (empty, as in bash)."""
    env = dict(doc["env"])
    standins = dict(doc["stand_ins"])
    unresolved, unset = [], []
    lines = []
    for line in doc["body"]:
        if doc["quoted"]:
            lines.append(line)
            continue
        while True:
            val = expand(line, env, in_heredoc=True)
            if not isinstance(val, Unresolved):
                lines.append(val)
                break
            m = re.match(r"\$\{?([A-Za-z_]\w*)", val)
            name = m.group(1) if m else None
            if name and name in STAND_INS and name not in env:
                env[name] = standins[name] = STAND_INS[name]
                continue
            if name and name not in env and val.endswith("(unset)"):
                env[name] = ""  # as bash expands an unset variable
                unset.append(name)
                continue
            unresolved.append(str(val))
            lines.append(line)
            break
    return "\n".join(lines) + "\n", unresolved, standins, unset


# --------------------------------------------------------------------------- discovery
def recipe_scripts(kaldi: str) -> list[str]:
    egs = os.path.join(kaldi, "egs")
    paths = set(glob.glob(os.path.join(egs, "*", "*", "local", "nnet3", "tuning", "*.sh")))
    paths |= set(glob.glob(os.path.join(egs, "*", "*", "local", "chain", "tuning", "*.sh")))
    for path in glob.glob(os.path.join(egs, "*", "*", "local", "**", "*.sh"), recursive=True):
        base = os.path.basename(path)
        if base.startswith("run_") or "tdnn" in base or "lstm" in base or "xconfig" in base:
            paths.add(path)
    out, seen = [], set()
    for path in sorted(paths):
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real) or os.path.islink(path):
            continue
        seen.add(real)
        with open(real, errors="replace") as f:
            if "xconfig" in f.read():
                out.append(path)
    return out


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


def check_recipe(xconfig: str, steps: str, workdir: str, python: str, frames: int, timeout: float) -> dict:
    """Kaldi accepts? then (a) configs, (b) build, (c) forward+backward. Runs in a child process."""
    res = {"status": None, "stage": None, "error": None, "failing_layer": None}
    kdir, odir = os.path.join(workdir, "kaldi"), os.path.join(workdir, "ours")
    ok, err = run_kaldi(steps, xconfig, kdir, python, timeout)
    if not ok:
        res.update(status="kaldi-rejects", stage="kaldi", error=err)
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
    stage = "configs"
    try:
        import numpy as np
        import torch

        from kaldi_avg.kaldi.nnet3.context import computable_ranges, model_context
        from kaldi_avg.kaldi.xconfig import write_config_dir
        from kaldi_avg.model.build import build_nnet
        from kaldi_avg.model.graph import NnetModule

        torch.set_num_threads(1)
        write_config_dir(os.path.join(kdir, "network.xconfig"), odir, {})
        for name in CONFIG_FILES:
            theirs, ours = os.path.join(kdir, name), os.path.join(odir, name)
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
        stage = "build"
        nnet = build_nnet(xconfig, "network.xconfig", which="ref")
        module = NnetModule(nnet)
        res["num_params"] = int(sum(p.numel() for p in module.parameters()))
        stage = "forward"
        left, right = model_context(nnet)
        res["context"] = [int(left), int(right)]
        frames = next((n for n in range(frames, 800) if _produces(computable_ranges(nnet, -left, n - 1 + right), n)),
                      frames)
        inputs = {n.name: n.dim for n in nnet.input_nodes()}
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(1, left + frames + right, inputs["input"], generator=g)
        other = [d for n, d in inputs.items() if n != "input"]
        ivec = torch.randn(1, other[0], generator=g) if other else None
        module.train()
        out = module(feats, left_context=left, num_frames=frames, ivectors=ivec)
        if tuple(out.shape[:2]) != (1, frames):
            raise AssertionError(f"output shape {tuple(out.shape)}")
        out.pow(2).sum().backward()
        if not torch.isfinite(out).all():
            raise AssertionError("non-finite output")
        bad = [n for n, p in module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise AssertionError(f"non-finite gradients in {bad[:3]}")
        del np
    except Exception as e:  # any failure is a census result
        msg = f"{type(e).__name__}: {e}".split("\n")[0][:400]
        res.update(status=f"{stage}-fail", stage=stage, error=msg,
                   failing_layer=_failing_layer(msg, xconfig, layers))
        if stage == "forward":
            res["traceback"] = traceback.format_exc(limit=-3)[-1200:]
        return res
    res["status"] = "supported"
    return res


def _produces(ranges: dict, frames: int) -> bool:
    """Whether the output is computable on frames 0..frames-1."""
    lo, hi = ranges["output"]
    return lo <= 0 and hi >= frames - 1


def _child(conn, *args):
    try:
        workdir = args[2]
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)   # an idct-layer writes its matrix relative to the working directory, as Kaldi's does
        conn.send(check_recipe(*args))
    except BaseException as e:
        conn.send({"status": "error", "stage": "harness", "error": f"{type(e).__name__}: {e}"[:400],
                   "failing_layer": "?"})
    finally:
        conn.close()


# --------------------------------------------------------------------------- main
def collect(kaldi: str) -> list[dict]:
    recipes = []
    egs = os.path.join(kaldi, "egs")
    for path in recipe_scripts(kaldi):
        rel = os.path.relpath(path, egs)
        with open(path, errors="replace") as f:
            text = f.read()
        USED_COMMAND_STAND_INS.clear()
        try:
            docs = find_xconfigs(text)
        except Exception as e:
            recipes.append({"recipe": rel, "status": "error", "stage": "shell", "error": f"{type(e).__name__}: {e}"})
            continue
        docs = [d for d in docs if "network" in d["target"] or d["target"].endswith("configs/xconfig")
                or "/config/" not in d["target"]]
        rnnlm = "/rnnlm/" in rel or "rnnlm" in os.path.basename(rel)
        for k, doc in enumerate(docs):
            name = rel if len(docs) == 1 else f"{rel}#{k + 1}"
            r = {"recipe": name, "line": doc["line"], "kind": "rnnlm" if rnnlm else
                 "chain" if "/chain" in rel else "nnet3"}
            try:
                xconfig, unresolved, standins, unset = fill_xconfig(doc)
            except Exception as e:
                r.update(status="error", stage="shell", error=f"{type(e).__name__}: {e}")
                recipes.append(r)
                continue
            standins.update({f"$({k} ...)": v for k, v in USED_COMMAND_STAND_INS.items()})
            r.update(xconfig=xconfig, unresolved=unresolved, stand_ins=standins, unset=unset)
            if "--existing-model" in text:
                r.update(status="skipped", stage="existing-model", error="passes --existing-model")
            elif re.search(r">>\s*\S*xconfig", text):
                r.update(status="skipped", stage="shell-loop", error="appends to the xconfig in a shell loop")
            elif unresolved:
                r.update(status="unresolved", stage="shell", error="; ".join(unresolved[:3]))
            recipes.append(r)
    return recipes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kaldi", required=True, help="kaldi-asr/kaldi checkout or extracted tree (needs egs/)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per recipe")
    ap.add_argument("--frames", type=int, default=4, help="output frames of the forward check")
    ap.add_argument("--filter", default=None, help="only recipes whose path matches this regex")
    ap.add_argument("--python", default=shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3",
                    help="the python3 that runs Kaldi's xconfig_to_configs.py")
    ap.add_argument("--kaldi-commit", default=None,
                    help="the tree's commit, recorded in the JSON (default: git rev-parse in --kaldi)")
    ap.add_argument("--work-dir", default=None, help="keep the config dirs here (default: a temp dir)")
    args = ap.parse_args(argv)

    steps = os.path.join(os.path.abspath(args.kaldi), "egs", "wsj", "s5", "steps")
    if not os.path.exists(os.path.join(steps, "nnet3", "xconfig_to_configs.py")):
        ap.error(f"{steps}/nnet3/xconfig_to_configs.py not found")
    t_start = time.time()
    recipes = collect(args.kaldi)
    if args.filter:
        recipes = [r for r in recipes if re.search(args.filter, r["recipe"])]
    work = args.work_dir or tempfile.mkdtemp(prefix="xconfig_census.")
    import torch  # noqa: F401 - imported once here, so the forked children start fast

    ctx = multiprocessing.get_context("fork")
    todo = [r for r in recipes if r.get("status") is None]
    running: dict = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            r = todo.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            wd = os.path.join(work, re.sub(r"[^\w.#-]+", "_", r["recipe"]))
            p = ctx.Process(target=_child, args=(child, r["xconfig"], steps, wd, args.python, args.frames,
                                                 args.timeout))
            p.start()
            child.close()
            running[parent] = (p, r, time.time())
        ready = multiprocessing.connection.wait(list(running), timeout=1.0)
        for conn in ready:
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
    for r in recipes:
        if r["status"] in ("skipped", "unresolved", "error") and "seconds" not in r:
            _print_row(r)
    summary = summarize(recipes)
    summary["seconds"] = round(time.time() - t_start, 1)
    _print_summary(summary)
    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, "xconfig_census.json")
    for r in recipes:
        r.pop("xconfig", None)
    with open(out_path, "w") as f:
        json.dump({"kaldi": os.path.abspath(args.kaldi), "kaldi_commit": args.kaldi_commit or _kaldi_commit(args.kaldi),
                   "summary": summary, "recipes": recipes}, f, indent=1)
    print(f"wrote {out_path}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _kaldi_commit(kaldi: str) -> str | None:
    try:
        p = subprocess.run(["git", "-C", kaldi, "rev-parse", "HEAD"], capture_output=True, text=True)
        return p.stdout.strip() or None
    except OSError:
        return None


def summarize(recipes: list[dict]) -> dict:
    status = collections.Counter(r["status"] for r in recipes)
    accepted = [r for r in recipes if r["status"] not in ("kaldi-rejects", "skipped", "unresolved", "error")
                or (r["status"] == "error" and r.get("stage") == "harness")]
    failing = collections.Counter(r.get("failing_layer") or "?" for r in accepted if r["status"] != "supported")
    by_kind = {}
    for kind in ("nnet3", "chain", "rnnlm"):
        acc = [r for r in accepted if r.get("kind") == kind]
        by_kind[kind] = {"accepted": len(acc), "supported": sum(r["status"] == "supported" for r in acc)}
    standins = collections.Counter(k for r in recipes for k in r.get("stand_ins", {}))
    unresolved = collections.Counter(re.match(r"\$?\(?\{?([^\s:)}]*)", u).group(1) or u
                                     for r in recipes for u in r.get("unresolved", []))
    distinct = len({r.get("xconfig") for r in accepted if r["status"] == "supported"})
    return {"recipes": len(recipes), "kaldi_accepts": len(accepted),
            "supported": status.get("supported", 0), "supported_distinct_xconfigs": distinct,
            "by_status": dict(status.most_common()), "failing_layer_types": dict(failing.most_common()),
            "by_kind": by_kind, "stand_ins_used": dict(standins.most_common()),
            "unresolved_references": dict(unresolved.most_common())}


def _print_row(r: dict) -> None:
    err = "" if r["status"] == "supported" else f"  [{r.get('failing_layer') or ''}] {r.get('error') or ''}"
    print(f"{r['status']:<15} {r['recipe']:<70}{err[:160]}", flush=True)


def _print_summary(s: dict) -> None:
    pct = 100.0 * s["supported"] / s["kaldi_accepts"] if s["kaldi_accepts"] else math.nan
    print()
    print(f"recipes (xconfig heredocs): {s['recipes']}; Kaldi accepts: {s['kaldi_accepts']}; "
          f"supported: {s['supported']} ({pct:.1f}%)")
    print("by status:  " + ", ".join(f"{k} {v}" for k, v in s["by_status"].items()))
    print("by kind:    " + ", ".join(f"{k} {v['supported']}/{v['accepted']}" for k, v in s["by_kind"].items()))
    print("failing layer types (recipes Kaldi accepts):")
    for k, v in s["failing_layer_types"].items():
        print(f"  {v:5d}  {k}")
    if s["stand_ins_used"]:
        def value(k):
            return STAND_INS.get(k, COMMAND_STAND_INS.get(k[2:-5]))
        print("stand-ins: " + ", ".join(f"{k}={value(k)} ({v})" for k, v in s["stand_ins_used"].items()))
    if s["unresolved_references"]:
        print("unresolved: " + ", ".join(f"{k} ({v})" for k, v in s["unresolved_references"].items()))


if __name__ == "__main__":
    sys.exit(main())
