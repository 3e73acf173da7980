"""Side by side with Kaldi: the whole training stage of Kaldi's steps/nnet3/train_rnn.py (train_dnn.py)
and of kaldi-avg's drop-in steps/kaldi_avg/train_rnn.py (train_dnn.py), same options, same FSDD data.

With KALDI_ROOT (or --kaldi-root) pointing to a built Kaldi, each network is trained twice, by Kaldi
and by kaldi-avg, with the same command line of Kaldi's options only (--cmd run.pl --use-gpu false,
2 jobs, 10 epochs, chunk 20 + 40 frames of left context, samples-per-iter 1024, minibatch 128,64;
see --help), then both models are decoded by the same steps/nnet3/decode.sh: kaldi-avg's stand-in, whose
local/score.sh reads its own text lattices (not the binary ones of Kaldi's nnet3-latgen-faster), so
WERs compare across runs with and without Kaldi. Without Kaldi, kaldi-avg's side runs alone.

Networks (--sizes; each an xconfig with LDA over Append(-2..2) of the 40-dim hires MFCC):
  tiny       one 64-dim relu-batchnorm layer, one fast-lstmp-layer 64 cells, 32+32 projections
  recipe     2 fast-lstmp-layers of 256 cells, 64+64 projections, delays -1/-2
  lstm4x800  4 fast-lstm-layers of 800 cells (about 85 s per iteration on each side on 2 cores: run it
             with --epochs 1 for its fixed costs, 10 epochs take most of an hour per side)
  tdnn       the recipe's 5-layer 256-dim TDNN, by train_dnn.py (8-frame egs, minibatch 512)
Every LSTM has label delay 5 (output-delay=5, and delay=5 on the LDA layer as Kaldi's LSTM recipes).

Data: egs/fsdd/s5/run.sh stages 0-5 and 7 (--speed-perturb false: 2,500 training utterances of 5
speakers, 500 test utterances of lucas; 40-dim hires MFCC; monophone GMM alignments and graph),
run once with kaldi-avg's pip-only stand-ins in a mirror of the recipe under --work-dir (outside
the repository) and reused by later runs; the corpus comes from --corpus or $FSDD_DIR.

Each stage runs in that mirror as a recipe runs it (`. ./path.sh; steps/.../train_rnn.py ...`), its
console lines timestamped as they arrive; the phases come from those lines and from the experiment's
logs (their mtimes: a run.pl-style log is written when its job ends):
  start-up      launch to the first LDA work (Kaldi: nnet3-init of init.raw and get_egs.sh, the egs
                column alone; kaldi-avg: imports, ranks, input checks, data loading)
  LDA           the LDA-like preconditioning matrix (Kaldi: nnet3-acc-lda-stats + sum + get-transform)
  init          presoftmax prior scale and 0.mdl, up to the first iteration
  per iteration training (slowest job), diagnostics (compute_prob valid/train; Kaldi runs them in
                the background beside the training jobs, kaldi-avg before them), averaging
                (end of the slowest job to N+1.mdl's log: nnet3-average / the collectives and
                the model write), other (the rest of the iteration: the script between iterations)
  combination   nnet3-combine and the combined model's diagnostics
  priors        the average posterior over the prior subsets
  export        final.mdl with adjusted priors, clean-up, reports, up to the script's exit
Stage time = the train_*.py command's wall time. WER = best %WER of the decode of data/test_hires;
valid acc = accuracy of the combined model on the valid subset (log/compute_prob_valid.combined.log).

    python benchmarks/vs_kaldi.py [--quick | --full] [--sizes tiny,recipe] [--sides ours,kaldi]
        [--kaldi-root DIR] [--corpus DIR] [--work-dir DIR] [--out benchmarks/results] [--commit REV]
        [--epochs 10] [--jobs 2] [--samples-per-iter 1024] [--minibatch 128,64] [--no-decode]
    python benchmarks/vs_kaldi.py --summarize [--sizes ...]    # the table again from the runs there

--commit REV runs that commit's kaldi-avg (git archive under --work-dir) rather than the working tree,
which others may be editing; --kaldi-avg DIR another checkout. --quick: the tiny network, 2 epochs
(a smoke run of a few minutes). Default: tiny and recipe at 10
epochs. --full: tiny, recipe, lstm4x800 and tdnn. Writes <out>/vs_kaldi.json (--name).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "fsdd"
PREPARED = "vs_kaldi_prepared.ok"
SIDES = ("ours", "kaldi")
CHECKOUT_PATHS = ("kaldi_avg", "steps", "utils", "local", "egs")   # what --commit extracts
SCRIPTS = {"ours": "steps/kaldi_avg/train_{kind}.py", "kaldi": "steps/nnet3/train_{kind}.py"}
LABEL_DELAY = 5
# As Kaldi's LSTM recipes: the LDA layer delayed by the label delay (xconfig_to_configs.py refuses an
# init.config that needs more context than the network).
LDA = "input dim={feat_dim} name=input\n" \
      "fixed-affine-layer name=lda{delay} input=Append(-2,-1,0,1,2) affine-transform-file={dir}/configs/lda.mat\n"
SIZES = {
    "tiny": ("rnn", "relu-batchnorm-layer name=tdnn1 dim=64\n"
                    "fast-lstmp-layer name=lstm1 cell-dim=64 recurrent-projection-dim=32 "
                    "non-recurrent-projection-dim=32 delay=-1\n"),
    "recipe": ("rnn", "fast-lstmp-layer name=lstm1 cell-dim=256 recurrent-projection-dim=64 "
                      "non-recurrent-projection-dim=64 delay=-1\n"
                      "fast-lstmp-layer name=lstm2 cell-dim=256 recurrent-projection-dim=64 "
                      "non-recurrent-projection-dim=64 delay=-2\n"),
    "lstm4x800": ("rnn", "".join(f"fast-lstm-layer name=lstm{i} cell-dim=800 delay=-1\n" for i in range(1, 5))),
    "tdnn": ("dnn", "relu-batchnorm-layer name=tdnn1 dim=256\n"
                    "relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=256\n"
                    "relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=256\n"
                    "relu-batchnorm-layer name=tdnn4 input=Append(-3,0,3) dim=256\n"
                    "relu-batchnorm-layer name=tdnn5 input=Append(-3,0,3) dim=256\n"),
}
DEFAULT_SIZES = "tiny,recipe"
FULL_SIZES = "tiny,recipe,lstm4x800,tdnn"

# console lines that open each phase (re.search on the line), per side
KALDI_MARKS = {"egs": r"Generating egs", "lda": r"Computing the preconditioning matrix",
               "init": r"Computing initial vector for FixedScaleComponent", "iterations": r"Iter: 0/",
               "combination": r"Doing final combination", "priors": r"Getting average posterior",
               "export": r"Re-adjusting priors"}
OURS_MARKS = {"lda": r"\] alignments: ", "iterations": r"\] averaging: ", "combination": r"\] combining the models",
              "priors": r"\] priors: "}
KALDI_ITER_RE = re.compile(r"Iter: (\d+)/")
ITER_LOG_RE = re.compile(r"^(?:average|select)\.(\d+)\.log$")
FRAMES_RE = re.compile(r"Overall average objective function for 'output' is \S+ over (\S+) frames")
VALID_RE = re.compile(r"Overall (accuracy|log-likelihood) for 'output' is (\S+) per frame")
WER_RE = re.compile(r"%WER (\S+)")
DATA_WAIT_RE = re.compile(r"iter (\d+): jobs (\d+) frames (\S+) train-seconds (\S+) data-wait-seconds (\S+) max \S+ "
                          r"communication-seconds (\S+) iteration-seconds (\S+)")
PHASES = ("startup", "egs", "lda", "init", "iterations", "combination", "priors", "export")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="smoke run: the tiny network, 2 epochs")
    preset.add_argument("--full", action="store_true", help=f"the issue's figures: {FULL_SIZES}")
    p.add_argument("--sizes", default=None, help=f"comma-separated, of {','.join(SIZES)} (default {DEFAULT_SIZES})")
    p.add_argument("--sides", default=None,
                   help="ours,kaldi (default: both when Kaldi is found, else ours)")
    p.add_argument("--kaldi-root", default=os.environ.get("KALDI_ROOT"),
                   help="a built Kaldi (default: $KALDI_ROOT)")
    p.add_argument("--corpus", default=None, help="FSDD directory (default: $FSDD_DIR, else ../shared/corpora/fsdd)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "kaldi-avg-vs-kaldi"),
                   help="the recipe mirror: prepared data (kept) and the experiments (default: %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--kaldi-avg", default=str(REPO), help="the kaldi-avg checkout to run (default: this one)")
    which.add_argument("--commit", default=None,
                       help="run this commit of this repository instead of its working tree (extracted with "
                            "git archive under --work-dir): stable figures while the tree is being edited")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="vs_kaldi", help="<out>/<name>.json")
    p.add_argument("--epochs", type=float, default=None, help="--trainer.num-epochs (default 10; --quick 2)")
    p.add_argument("--jobs", type=int, default=2, help="num-jobs-initial = num-jobs-final")
    p.add_argument("--samples-per-iter", type=int, default=1024, help="RNN; tdnn: --dnn-samples-per-iter")
    p.add_argument("--minibatch", default="128,64", help="--trainer.rnn.num-chunk-per-minibatch")
    p.add_argument("--chunk-width", type=int, default=20)
    p.add_argument("--chunk-left-context", type=int, default=40)
    p.add_argument("--dnn-epochs", type=float, default=2.0,
                   help="train_dnn.py's --trainer.num-epochs (the recipe's tdnn_epochs; each epoch is 8 passes "
                        "over the archives, one frame offset of the 8-frame egs each)")
    p.add_argument("--dnn-samples-per-iter", type=int, default=4000, help="train_dnn.py's egs per archive")
    p.add_argument("--dnn-minibatch", default="512", help="train_dnn.py's --trainer.optimization.minibatch-size")
    p.add_argument("--egs-nj", type=int, default=2,
                   help="--egs.opts='--nj N': get_egs.sh's jobs (at most 5, FSDD's training speakers)")
    p.add_argument("--lrates", default="0.003,0.0003", help="initial,final effective learning rate")
    p.add_argument("--cmvn-opts", default="--norm-means=true --norm-vars=true", help="--feat.cmvn-opts")
    p.add_argument("--srand", type=int, default=0)
    p.add_argument("--nj", type=int, default=2, help="data preparation jobs")
    p.add_argument("--no-decode", action="store_true", help="skip decoding (no WER)")
    p.add_argument("--summarize", action="store_true", help="no training: the table from the runs in --work-dir")
    return p


# -- the recipe mirror and its data -------------------------------------------------------------
def recipe_dir(work: Path) -> Path:
    return work / "root" / "egs" / RECIPE / "s5"


def mirror(work: Path, checkout: Path = REPO) -> Path:
    """<work>/root/{steps,utils,kaldi_avg} -> the kaldi-avg checkout, venv -> its venv (else this
    repository's), <work>/root/egs/fsdd/s5/{run.sh,...} -> its recipe (as kaldi_avg.experiments.prepare
    does): outputs land under <work>."""
    root = work / "root"
    s5 = recipe_dir(work)
    s5.mkdir(parents=True, exist_ok=True)
    venv = checkout / "venv" if (checkout / "venv").is_dir() else REPO / "venv"
    links = [(venv, root / "venv")] + [(checkout / n, root / n) for n in ("steps", "utils", "kaldi_avg", "local")]
    links += [(checkout / "egs" / RECIPE / "s5" / n, s5 / n) for n in ("run.sh", "local", "conf", "cmd.sh", "path.sh")]
    for target, path in links:
        if path.is_symlink() and os.readlink(path) == str(target):
            continue
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)
    return s5


def base_env(kaldi_root: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KALDI_ROOT"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", LC_ALL="C")
    if kaldi_root:
        env["KALDI_ROOT"] = kaldi_root
    return env


def prepare_data(s5: Path, corpus: str | None, nj: int) -> float:
    """run.sh stages 0-5 and 7 without speed perturbation, once (kaldi-avg's stand-ins); seconds spent."""
    if (s5 / PREPARED).exists():
        return 0.0
    corpus = corpus or os.environ.get("FSDD_DIR") or str(REPO.parent / "shared" / "corpora" / "fsdd")
    if not os.path.isdir(os.path.join(corpus, "recordings")):
        raise SystemExit(f"vs_kaldi.py: no recordings/ under {corpus}: give --corpus or set FSDD_DIR")
    t0 = time.time()
    common = ["--speed-perturb", "false", "--corpus", corpus, "--nj", str(nj)]
    with open(s5 / "prepare.log", "w") as log:
        for first, last in ((0, 5), (7, 7)):
            cmd = ["bash", "./run.sh", "--stage", str(first), "--stop-stage", str(last), *common]
            print(f"preparing FSDD: (cd {s5} && {' '.join(cmd)})", flush=True)
            if subprocess.run(cmd, cwd=s5, stdout=log, stderr=subprocess.STDOUT, env=base_env(None)).returncode:
                raise SystemExit(f"vs_kaldi.py: data preparation failed, see {s5 / 'prepare.log'}")
    (s5 / PREPARED).write_text(f"{corpus}\n")
    return time.time() - t0


def network_dims(s5: Path, checkout: Path) -> tuple[int, int]:
    """(pdfs of exp/mono_ali/final.mdl, feature dim of data/train_hires)."""
    sys.path.insert(0, str(checkout))
    from kaldi_avg.kaldi.tables import MatrixTable
    from kaldi_avg.kaldi.transition import read_transition_model
    feats = MatrixTable(str(s5 / "data" / "train_hires" / "feats.scp"))
    return read_transition_model(str(s5 / "exp" / "mono_ali" / "final.mdl")).num_pdfs, feats.shape(next(iter(feats)))[1]


def xconfig(size: str, exp: str, feat_dim: int, num_pdfs: int) -> str:
    kind, body = SIZES[size]
    last = body.strip().splitlines()[-1].split()[1].split("=")[1]
    rnn = kind == "rnn"
    return (LDA.format(feat_dim=feat_dim, dir=exp, delay=f" delay={LABEL_DELAY}" if rnn else "") + body
            + f"output-layer name=output input={last}{f' output-delay={LABEL_DELAY}' if rnn else ''} dim={num_pdfs} "
              "max-change=1.5\n")


# -- one stage -----------------------------------------------------------------------------------
def train_options(args, kind: str, exp: str) -> list[str]:
    """Kaldi's options only, the same for both sides."""
    lr0, lr1 = args.lrates.split(",")
    opts = ["--stage=-10", "--cmd=run.pl", "--use-gpu=false", f"--feat.cmvn-opts={args.cmvn_opts}",
            f"--trainer.srand={args.srand}",
            f"--trainer.num-epochs={args.epochs if kind == 'rnn' else args.dnn_epochs:g}",
            f"--trainer.optimization.num-jobs-initial={args.jobs}",
            f"--trainer.optimization.num-jobs-final={args.jobs}",
            f"--trainer.optimization.initial-effective-lrate={lr0}",
            f"--trainer.optimization.final-effective-lrate={lr1}"]
    if kind == "rnn":
        opts += [f"--trainer.samples-per-iter={args.samples_per_iter}",
                 f"--trainer.rnn.num-chunk-per-minibatch={args.minibatch}", f"--egs.chunk-width={args.chunk_width}",
                 f"--egs.chunk-left-context={args.chunk_left_context}", "--egs.chunk-right-context=0"]
    else:
        opts += [f"--trainer.samples-per-iter={args.dnn_samples_per_iter}",
                 f"--trainer.optimization.minibatch-size={args.dnn_minibatch}", "--egs.frames-per-eg=8"]
    # get_egs.sh splits the data by speaker into 6 jobs by default; FSDD trains on 5 speakers
    opts.append(f"--egs.opts=--nj {args.egs_nj}")
    return opts + ["--feat-dir=data/train_hires", "--ali-dir=exp/mono_ali", "--lang=data/lang", f"--dir={exp}"]


def in_recipe(command: list[str]) -> list[str]:
    """`command` run as a recipe runs it: after `. ./path.sh` (Kaldi's steps/utils when KALDI_ROOT is set)."""
    return ["bash", "-c", '. ./path.sh && exec "$@"', "vs_kaldi", *command]


def run_timed(command: list[str], cwd: Path, env: dict, console: Path) -> tuple[float, float, int]:
    """Runs `command`, writing each console line to `console` as '<unix time> <line>'; (start, end, code)."""
    t0 = time.time()
    with open(console, "w") as out:
        out.write(f"{t0:.3f} # {' '.join(command)}\n")
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            out.write(f"{time.time():.3f} {line.rstrip()}\n")
            out.flush()
        code = proc.wait()
    t1 = time.time()
    with open(console, "a") as out:
        out.write(f"{t1:.3f} # exit {code}\n")
    return t0, t1, code


def run_stage(args, s5: Path, size: str, side: str, dims: tuple[int, int], env: dict) -> None:
    """Trains (and decodes) one network on one side into exp/vs_kaldi/<size>_<side>."""
    kind = SIZES[size][0]
    exp = f"exp/vs_kaldi/{size}_{side}"
    shutil.rmtree(s5 / exp, ignore_errors=True)
    (s5 / exp / "configs").mkdir(parents=True)
    xconfig_path = s5 / exp / "configs" / "network.xconfig"
    xconfig_path.write_text(xconfig(size, exp, dims[1], dims[0]))
    meta: dict = {"size": size, "side": side, "script": SCRIPTS[side].format(kind=kind)}
    if side == "kaldi":   # Kaldi's recipes make configs/ before train_*.py
        t0 = time.time()
        proc = subprocess.run(in_recipe(["steps/nnet3/xconfig_to_configs.py",
                                         f"--xconfig-file={exp}/configs/network.xconfig",
                                         f"--config-dir={exp}/configs"]),
                              cwd=s5, env=env, capture_output=True, text=True)
        meta["configs_s"] = time.time() - t0
        (s5 / exp / "xconfig_to_configs.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            meta["error"] = f"xconfig_to_configs.py failed (code {proc.returncode}), see {exp}/xconfig_to_configs.log"
            (s5 / exp / "vs_kaldi.meta.json").write_text(json.dumps(meta, indent=1))
            print(f"{size} {side}: {meta['error']}", flush=True)
            return
    command = [meta["script"], *train_options(args, kind, exp)]
    meta["command"] = shlex.join(command)
    print(f"{size} {side}: (cd {s5} && {meta['command']})", flush=True)
    t0, t1, code = run_timed(in_recipe(command), s5, env, s5 / exp / "console.log")
    meta.update(start=t0, end=t1, code=code)
    if code:
        meta["error"] = f"{meta['script']} failed (code {code}), see {s5 / exp / 'console.log'}"
        print(f"{size} {side}: {meta['error']}", flush=True)
    elif not args.no_decode:
        decode = ["--extra-left-context", str(args.chunk_left_context), "--extra-right-context", "0",
                  "--frames-per-chunk", str(args.chunk_width)] if kind == "rnn" else []
        t = time.time()
        proc = subprocess.run(in_recipe(["steps/nnet3/decode.sh", "--nj", "1", "--cmd", "run.pl", *decode,
                                         "exp/mono/graph", "data/test_hires", f"{exp}/decode_test"]),
                              cwd=s5, env=base_env(None), capture_output=True, text=True)
        meta["decode_s"] = time.time() - t
        (s5 / exp / "decode.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            meta["decode_error"] = f"decode.sh failed (code {proc.returncode}), see {s5 / exp / 'decode.log'}"
            print(f"{size} {side}: {meta['decode_error']}", flush=True)
    (s5 / exp / "vs_kaldi.meta.json").write_text(json.dumps(meta, indent=1))
    print(f"{size} {side}: {t1 - t0:.1f} s", flush=True)


# -- what the logs say ---------------------------------------------------------------------------
def read_console(path: str | Path) -> list[tuple[float, str]]:
    """The (time, line) pairs run_timed wrote."""
    lines = []
    for raw in Path(path).read_text(errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        try:
            lines.append((float(stamp), text))
        except ValueError:
            continue
    return lines


def first_time(console: list[tuple[float, str]], pattern: str) -> float | None:
    regex = re.compile(pattern)
    return next((t for t, line in console if regex.search(line)), None)


def mtime(path: str | Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _max_mtime(paths) -> float | None:
    times = [t for t in map(mtime, paths) if t is not None]
    return max(times) if times else None


def _train_frames(paths) -> float:
    total = 0.0
    for path in paths:
        for m in map(FRAMES_RE.search, Path(path).read_text(errors="replace").splitlines()):
            if m:
                total += float(m.group(1))
    return total


def iteration_phases(log_dir: str | Path, starts: dict[int, float], first_start: float | None,
                     iterations_end: float | None, background_diagnostics: bool) -> list[dict]:
    """Per iteration N (one log/average.N.log or select.N.log): its start (starts[N], else the end of
    N-1, else first_start), then
      diagnostics  last compute_prob_{valid,train}.N.log / progress.N.log - start
      training     last train.N.*.log - start (background diagnostics) or - diagnostics' end
      averaging    average.N.log - last train.N.*.log
      other        next start (or iterations_end) - average.N.log
    with the jobs' supervised frames (their 'Overall average objective' lines)."""
    log_dir = Path(log_dir)
    found = sorted(int(m.group(1)) for m in map(ITER_LOG_RE.match, os.listdir(log_dir)) if m)
    rows: list[dict] = []
    ends = {}
    for n in found:
        ends[n] = mtime(next(p for p in (log_dir / f"average.{n}.log", log_dir / f"select.{n}.log") if p.exists()))
    for i, n in enumerate(found):
        start = starts.get(n, ends.get(n - 1, first_start if i == 0 else None))
        end = ends[n]
        nxt = found[i + 1] if i + 1 < len(found) else None
        following = iterations_end if nxt is None else starts.get(nxt, end)
        train_logs = sorted(glob.glob(str(log_dir / f"train.{n}.*.log")))
        train_end = _max_mtime(train_logs)
        diag_end = _max_mtime([log_dir / f"compute_prob_{k}.{n}.log" for k in ("valid", "train")]
                              + [log_dir / f"progress.{n}.log"])
        row = {"iteration": n, "start": start, "end": end, "jobs": len(train_logs), "frames": _train_frames(train_logs)}
        if start is not None and diag_end is not None:
            row["diagnostics_s"] = diag_end - start
        if train_end is not None and start is not None:
            after = start if background_diagnostics or diag_end is None else diag_end
            row["training_s"] = train_end - after
            row["averaging_s"] = end - train_end
        if start is not None:
            row["wall_s"] = end - start
        if following is not None:
            row["other_s"] = following - end
        rows.append(row)
    return rows


def _data_wait(log_dir: Path) -> dict[int, dict]:
    path = log_dir / "data_wait.log"
    if not path.exists():
        return {}
    rows = {}
    for m in map(DATA_WAIT_RE.match, path.read_text().splitlines()):
        if m:
            rows[int(m.group(1))] = {"collective_s": float(m.group(6)), "train_seconds_sum": float(m.group(4)),
                                     "data_wait_s": float(m.group(5))}
    return rows


def _phases(bounds: list[tuple[str, float | None]], t0: float, t1: float) -> dict[str, float]:
    """bounds: (phase, start) in order; each phase lasts to the next known start (the last to t1).
    start-up runs from t0 to the first."""
    known = [(name, t) for name, t in bounds if t is not None]
    out = {name: 0.0 for name in PHASES}
    out["startup"] = (known[0][1] if known else t1) - t0
    for (name, t), nxt in zip(known, known[1:] + [("", t1)]):
        out[name] = nxt[1] - t
    return out


def kaldi_phases(console: list[tuple[float, str]], log_dir: str | Path, t0: float, t1: float) -> dict:
    """Kaldi's train_rnn.py / train_dnn.py: phases from its logger lines, iterations from its logs."""
    marks = {name: first_time(console, pattern) for name, pattern in KALDI_MARKS.items()}
    phases = _phases([(name, marks[name]) for name in ("egs", "lda", "init", "iterations", "combination",
                                                       "priors", "export")], t0, t1)
    starts = {int(m.group(1)): t for t, m in ((t, KALDI_ITER_RE.search(line)) for t, line in console) if m}
    end = next((marks[k] for k in ("combination", "priors", "export") if marks[k] is not None), t1)
    iters = iteration_phases(log_dir, starts, marks["iterations"], end, background_diagnostics=True)
    return {"phases": phases, "iterations": iters, "background_diagnostics": True}


def ours_phases(console: list[tuple[float, str]], log_dir: str | Path, t0: float, t1: float) -> dict:
    """kaldi-avg's steps/kaldi_avg/train_*.py: phases from rank 0's lines and the log mtimes."""
    log_dir = Path(log_dir)
    marks = {name: first_time(console, pattern) for name, pattern in OURS_MARKS.items()}
    lda_end = mtime(log_dir / "get_transform.log")
    init = lda_end if marks["lda"] is not None and lda_end is not None and lda_end > marks["lda"] else None
    post = mtime(log_dir.parent / "post.combined.vec")
    export = post if marks["priors"] is not None and post is not None and post > marks["priors"] else None
    phases = _phases([("lda", marks["lda"]), ("init", init), ("iterations", marks["iterations"]),
                      ("combination", marks["combination"]), ("priors", marks["priors"]), ("export", export)], t0, t1)
    if init is None:   # no LDA in the network: its phase is set-up
        phases["init"] += phases.pop("lda")
        phases["lda"] = 0.0
    end = next((marks[k] for k in ("combination", "priors") if marks[k] is not None), t1)
    iters = iteration_phases(log_dir, {}, marks["iterations"], end, background_diagnostics=False)
    waits = _data_wait(log_dir)
    for row in iters:
        row.update(waits.get(row["iteration"], {}))
    return {"phases": phases, "iterations": iters, "background_diagnostics": False}


EVENT_FILES = ("lda.mat", "0.mdl", "combined.mdl", "post.combined.vec", "final.mdl", "accuracy.report", "progress.png",
               "log/combine.log", "log/get_transform.log", "log/compute_prob_valid.combined.log",
               "log/compute_prob_train.combined.log")


def events(console: list[tuple[float, str]], exp: str | Path, t0: float) -> dict[str, float]:
    """Seconds after the launch: the first console line, every phase mark, the last line before the
    exit, and the mtimes of the files that the phases after the iterations write."""
    out: dict[str, float] = {}
    lines = [(t, line) for t, line in console if not line.startswith("# ")]
    if lines:
        out["first console line"] = lines[0][0] - t0
        out["last console line"] = lines[-1][0] - t0
    for name, pattern in {**{f"kaldi {k}": v for k, v in KALDI_MARKS.items()},
                          **{f"ours {k}": v for k, v in OURS_MARKS.items()}, "ours ranks up": r"\] rank 0 of "}.items():
        t = first_time(lines, pattern)
        if t is not None:
            out[name] = t - t0
    for rel in EVENT_FILES:
        t = mtime(Path(exp) / rel)
        if t is not None:
            out[rel] = t - t0
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def valid_stats(log_dir: str | Path) -> dict[str, float]:
    """{'accuracy', 'log-likelihood'} of the combined (else final) model on the valid subset."""
    for name in ("compute_prob_valid.combined.log", "compute_prob_valid.final.log"):
        path = Path(log_dir) / name
        if path.exists():
            return {m.group(1): float(m.group(2)) for m in map(VALID_RE.search, path.read_text().splitlines()) if m}
    return {}


def best_wer(decode_dir: str | Path) -> float | None:
    wers = [float(m.group(1)) for path in glob.glob(os.path.join(decode_dir, "wer_*"))
            for m in map(WER_RE.search, Path(path).read_text(errors="replace").splitlines()) if m]
    return min(wers) if wers else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(exp: str | Path) -> dict:
    """One run's row: stage seconds, phases, per-iteration means, WER, valid accuracy."""
    exp = Path(exp)
    meta = json.loads((exp / "vs_kaldi.meta.json").read_text())
    row = {k: meta.get(k) for k in ("size", "side", "script", "command", "code", "error", "configs_s", "decode_s",
                                    "decode_error")}
    row = {k: v for k, v in row.items() if v is not None}
    if "start" not in meta:
        return row
    t0, t1 = meta["start"], meta["end"]
    row["stage_s"] = t1 - t0
    console = read_console(exp / "console.log")
    parse = kaldi_phases if meta["side"] == "kaldi" else ours_phases
    parsed = parse(console, exp / "log", t0, t1) if (exp / "log").is_dir() else {"phases": {}, "iterations": []}
    row["phases"] = parsed["phases"]
    row["events"] = events(console, exp, t0)
    iters = parsed["iterations"]
    row["num_iterations"] = len(iters)
    per = {}
    for key in ("wall_s", "training_s", "diagnostics_s", "averaging_s", "other_s", "collective_s"):
        values = [r[key] for r in iters if r.get(key) is not None]
        if values:
            per[key] = _mean(values)
            per[key.replace("_s", "_total_s")] = sum(values)
    train = [(r["frames"], r["training_s"], r["jobs"]) for r in iters if r.get("training_s") and r["jobs"]]
    if train:
        per["frames_per_s_per_job"] = sum(f for f, _, _ in train) / sum(s * j for _, s, j in train)
    per["background_diagnostics"] = parsed.get("background_diagnostics", False)
    row["per_iteration"] = per
    row["iterations"] = iters
    stats = valid_stats(exp / "log")
    row["valid_accuracy"] = stats.get("accuracy")
    row["valid_objective"] = stats.get("log-likelihood")
    row["wer"] = best_wer(exp / "decode_test")
    return row


# -- the table -----------------------------------------------------------------------------------
def _f(value, fmt: str = ".1f", width: int = 6) -> str:
    return f"{value:>{width}{fmt}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def format_table(rows: list[dict]) -> str:
    """Stage time, phases (seconds), per-iteration means (seconds), WER and valid accuracy; a ratio
    line kaldi-avg / Kaldi under each size run on both sides."""
    head = (f"{'size':<10} {'side':<6} {'stage':>7} {'ratio':>5} {'start':>6} {'egs':>6} {'LDA':>6} {'init':>6} "
            f"{'iters':>5} {'iter':>5} {'train':>5} {'diag':>5} {'avg':>5} {'other':>5} {'comb':>6} {'prior':>6} "
            f"{'export':>6} {'WER%':>6} {'v.acc':>6}")
    lines = [head, "-" * len(head)]
    stage = {(r.get("size"), r.get("side")): r.get("stage_s") for r in rows if not r.get("error")}
    for r in rows:
        if r.get("error"):
            lines.append(f"{r.get('size', '?'):<10} {r.get('side', '?'):<6} failed: {r['error']}")
            continue
        ph, it = r.get("phases", {}), r.get("per_iteration", {})
        ours, kaldi = stage.get((r["size"], "ours")), stage.get((r["size"], "kaldi"))
        ratio = ours / kaldi if r["side"] == "ours" and ours and kaldi else None
        diag = _f(it.get("diagnostics_s"), ".2f", 5) + ("*" if it.get("background_diagnostics") else " ")
        lines.append(
            f"{r['size']:<10} {r['side']:<6} {_f(r.get('stage_s'), '.1f', 7)} {_f(ratio, '.2f', 5)} "
            f"{_f(ph.get('startup'))} {_f(ph.get('egs'))} {_f(ph.get('lda'))} {_f(ph.get('init'))} "
            f"{r.get('num_iterations', 0):>5} {_f(it.get('wall_s'), '.2f', 5)} {_f(it.get('training_s'), '.2f', 5)} "
            f"{diag[:-1]}{diag[-1]}{_f(it.get('averaging_s'), '.2f', 5)} {_f(it.get('other_s'), '.2f', 5)} "
            f"{_f(ph.get('combination'))} {_f(ph.get('priors'))} {_f(ph.get('export'))} "
            f"{_f(r.get('wer'), '.2f')} {_f(r.get('valid_accuracy'), '.3f')}")
    lines += [f"{r['size']} {r['side']}: {r['decode_error']}" for r in rows if r.get("decode_error")]
    lines.append("seconds; ratio = kaldi-avg / Kaldi stage time; iter/train/diag/avg/other: means per iteration "
                 "(* = in the background, beside training)")
    return "\n".join(lines)


def kaldi_ok(kaldi_root: str | None) -> str | None:
    """Why `kaldi_root` is not a usable built Kaldi, or None."""
    if not kaldi_root:
        return "KALDI_ROOT is not set"
    for rel in ("egs/wsj/s5/steps/nnet3/train_rnn.py", "tools/config/common_path.sh", "src/nnet3bin/nnet3-train"):
        if not os.path.exists(os.path.join(kaldi_root, rel)):
            return f"{kaldi_root}/{rel} is missing"
    return None


def extract_commit(rev: str, work: Path) -> tuple[Path, str]:
    """<work>/checkouts/<sha>: what the recipes and the drop-ins need of commit `rev`; (dir, sha)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    checkout = work / "checkouts" / sha
    if not (checkout / "kaldi_avg").is_dir():
        tmp = checkout.with_name(sha + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, *CHECKOUT_PATHS], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(checkout)
    return checkout, sha


def commit(checkout: Path) -> str | None:
    """The checkout's git commit (+ '-dirty' with uncommitted changes), or None outside git."""
    def git(*a):
        return subprocess.run(["git", "-C", str(checkout), *a], capture_output=True, text=True)
    head = git("rev-parse", "--show-toplevel")
    if head.returncode or Path(head.stdout.strip()).resolve() != checkout:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "kaldi_avg", "steps", "utils", "egs").stdout
    return git("rev-parse", "--short", "HEAD").stdout.strip() + ("-dirty" if dirty.strip() else "")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    sizes = (args.sizes or ("tiny" if args.quick else FULL_SIZES if args.full else DEFAULT_SIZES)).split(",")
    for size in sizes:
        if size not in SIZES:
            raise SystemExit(f"vs_kaldi.py: unknown size {size!r} (of {', '.join(SIZES)})")
    args.epochs = args.epochs if args.epochs is not None else (2.0 if args.quick else 10.0)
    why_not = kaldi_ok(args.kaldi_root)
    sides = args.sides.split(",") if args.sides else (["ours"] if why_not and not args.summarize else list(SIDES))
    if "kaldi" in sides and why_not and not args.summarize:
        raise SystemExit(f"vs_kaldi.py: --sides kaldi needs a built Kaldi: {why_not}")
    if why_not and not args.sides and not args.summarize:
        print(f"Kaldi's side left out: {why_not}", flush=True)
    work, checkout = Path(args.work_dir).resolve(), Path(args.kaldi_avg).resolve()
    s5 = recipe_dir(work)
    revision = None
    if args.commit and not args.summarize:
        checkout, revision = extract_commit(args.commit, work)
    info: dict = {"work_dir": str(work), "kaldi_root": None if why_not else args.kaldi_root, "sizes": sizes,
                  "sides": sides, "options": {k: getattr(args, k) for k in (
                      "epochs", "jobs", "samples_per_iter", "minibatch", "chunk_width", "chunk_left_context",
                      "dnn_epochs", "dnn_samples_per_iter", "dnn_minibatch", "egs_nj", "lrates", "cmvn_opts", "srand")},
                  "decoder": "kaldi-avg's steps/nnet3/decode.sh",
                  "cpus": os.cpu_count(), "kaldi_avg": str(checkout),
                  "kaldi_avg_commit": revision or commit(checkout),
                  "summarized": args.summarize}   # --summarize: options and commit are this call's; rows say theirs
    if not args.summarize:
        mirror(work, checkout)
        info["prepare_s"] = prepare_data(s5, args.corpus, args.nj)
        dims = network_dims(s5, checkout)
        info["num_pdfs"], info["feat_dim"] = dims
        env = base_env(None if why_not else args.kaldi_root)
        for size in sizes:
            for side in sides:
                run_stage(args, s5, size, side, dims, env)
    rows = [summarize(s5 / "exp" / "vs_kaldi" / f"{size}_{side}") for size in sizes for side in sides
            if (s5 / "exp" / "vs_kaldi" / f"{size}_{side}" / "vs_kaldi.meta.json").exists()]
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    path.write_text(json.dumps({**info, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0 if all(not r.get("error") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
