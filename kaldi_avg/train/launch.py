"""steps/kaldi_avg/train_rnn.py and train_dnn.py: Kaldi's command lines, starting the persistent ranks.

How many ranks (printed at start-up): --mpi.num-ranks, else num-jobs-final as Kaldi runs that many
jobs at once, capped on one machine by its GPUs (one per rank) or CPU cores / --num-threads; one
rank trains in this process. How they start (--mpi.launcher, docs/training.md):

* an MPI launcher command: `<launcher> [its args] -n N [hostfile option] python -m kaldi_avg.train.cli`;
* `cmd`: one Kaldi array job, `$cmd JOB=1:N log/rank.JOB.log python -m kaldi_avg.train.cli ...`,
  whose ranks meet through a file in the experiment directory (torch.distributed, gloo or NCCL).

SIGTERM, SIGINT or SIGHUP to this process end the launcher and every rank (SIGTERM, then SIGKILL
after a grace period) and exit 128 + the signal; the last finished iteration stays resumable with
--stage. When the launch fails, what failed ranks left in log/rank.R.failed is printed: the launcher
may have killed a rank before forwarding its stderr.

Nothing outlives a run or waits forever: this process holds the experiment directory's lock
(runlock.py: one run per --dir) and touches log/launcher.heartbeat every second, which every rank
watches (`--mpi.launcher-heartbeat`): killed with SIGKILL, it leaves no rank running for more than
about 10 s. An MPI launcher ends the job when a rank fails; an array job has nobody to do that, so
under --mpi.launcher=cmd this process watches log/rank.R.failed and the jobs' logs and ends every
rank (stopped ones too) at the first failure.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import torch

from ..atomic import remove_stale_temporaries, write_text
from ..errors import UsageError
from ..parallel.torch_backend import new_rendezvous
from ..parallel.watchdog import LAUNCHER_HEARTBEAT_S
from .cli import main as rank_main
from .config import ConfigError, RunConfig
from .expdir import ExpDir
from .launch_report import LauncherOutput, check_log_dir, failure_lines, print_lines, with_resume_line
from .options import DEFAULT_SCRIPT, get_parser
from .runlock import RunLock

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_PROGRAMS = os.path.join(PACKAGE_ROOT, "kaldi_avg", "bin")   # package data (setup.py)
CLUSTER_CMDS = ("queue.pl", "slurm.pl", "ssh.pl")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_SECONDS = 5.0
REPORT_PREFIX = "kaldi_avg.parallel: "   # the lines of log/rank.R.failed that say why (see parallel/watchdog.py)
MONITOR_LINE = re.compile(r"ended without finishing at (\S+)$")
# The last line of an array job's log: run.pl's "# Ended (code N)", queue.pl's and slurm.pl's "with status N".
JOB_ENDED = re.compile(r"^# (?:Ended \(code (\d+)\)|Finished at .* with status (\d+))", re.MULTILINE)
FAILURE_GRACE_SECONDS = 1.0   # after the first failure of an array job, for the other reports to land


@dataclass(frozen=True)
class Launch:
    num_ranks: int
    why: str                # how the rank count was chosen, for the log
    command: list[str]      # empty: train in this process
    rendezvous: str | None = None   # the array job's meeting file, removed when the launch ends
    heartbeat: str | None = None    # touched while the ranks run; they exit when it stops changing
    local: bool = False             # an array job whose ranks all run on this host (run.pl)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def visible_gpus(use_gpu: str) -> int:
    return torch.cuda.device_count() if use_gpu not in ("no", "false") and torch.cuda.is_available() else 0


def default_num_ranks(config: RunConfig, on_cluster: bool) -> tuple[int, str]:
    """num-jobs-final, capped by this machine unless the ranks go elsewhere; algorithms other than
    Kaldi's need a divisor of num-jobs-final (equal workers per rank)."""
    jobs = config.schedule.num_jobs_final
    if on_cluster:
        return jobs, f"{jobs} rank(s): one per job (num-jobs-final={jobs}), placed by the cluster"
    gpus = visible_gpus(config.launch.use_gpu)
    cap, what = (gpus, f"{gpus} visible GPU(s)") if gpus else \
        (max(1, cpu_count() // max(1, config.launch.num_threads)),
         f"{cpu_count()} CPU core(s) / --num-threads={config.launch.num_threads}")
    n = min(jobs, cap)
    if not config.averaging.kaldi_jobs:
        n = max(d for d in range(1, n + 1) if jobs % d == 0)
    return n, f"{n} rank(s): num-jobs-final={jobs} capped by {what}"


def resolve_program(word: str) -> str:
    """A bare program name: PATH first, then this Python's bin directory (the venv's mpiexec), then
    the recipe's utils/ (Kaldi's run.pl, also when path.sh was not sourced), then the run.pl that
    the package ships (kaldi_avg/bin/, in a clone a link to utils/run.pl)."""
    if os.path.sep in word:
        return word
    for candidate in (shutil.which(word), os.path.join(os.path.dirname(sys.executable), word),
                      os.path.abspath(os.path.join("utils", word)), os.path.join(BUNDLED_PROGRAMS, word)):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    extra = "; pip install 'kaldi-avg[mpi]' installs MPICH's mpiexec" if word in ("mpiexec", "mpirun") else ""
    raise ConfigError(f"{word!r} was not found on PATH (nor in {os.path.dirname(sys.executable)}, ./utils/ "
                      f"or {BUNDLED_PROGRAMS}){extra}")


def launcher_kind(config: RunConfig) -> str:
    """'cmd' or 'mpi' for --mpi.launcher (auto: cmd for cluster scripts, else mpiexec if installed)."""
    launcher = config.launch.launcher
    if launcher == "cmd":
        return "cmd"
    if launcher != "auto":
        return "mpi"
    if os.path.basename(shlex.split(config.launch.cmd)[0]) in CLUSTER_CMDS:
        return "cmd"
    try:
        resolve_program("mpiexec")
        return "mpi"
    except ConfigError:
        return "cmd"


def hostfile_option(launcher: str) -> str:
    """Open MPI's mpirun spells it --hostfile; MPICH's hydra -f."""
    try:
        version = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    return "--hostfile" if re.search(r"Open MPI|OpenRTE|PRRTE", version) else "-f"


def rank_command(script: str, argv: list[str], num_ranks: int, heartbeat: str) -> list[str]:
    return [sys.executable, "-m", "kaldi_avg.train.cli", script, *argv, f"--mpi.num-ranks={num_ranks}",
            f"--mpi.launcher-heartbeat={heartbeat}"]


def plan_launch(argv: list[str], config: RunConfig) -> Launch:
    kind = launcher_kind(config)
    words = shlex.split(config.launch.launcher) if kind == "mpi" and config.launch.launcher != "auto" else \
        ["mpiexec"] if kind == "mpi" else shlex.split(config.launch.cmd)
    on_cluster = (kind == "cmd" and os.path.basename(words[0]) in CLUSTER_CMDS) or \
        (kind == "mpi" and (config.launch.hostfile is not None or len(words) > 1))
    if config.launch.num_ranks is not None:
        n, why = config.launch.num_ranks, f"{config.launch.num_ranks} rank(s) (--mpi.num-ranks)"
    else:
        n, why = default_num_ranks(config, on_cluster)
    config.check_world(n)
    if n == 1:
        return Launch(1, why, [])
    program = resolve_program(words[0])
    exp = ExpDir(config.dir)
    heartbeat = exp.launcher_heartbeat
    if kind == "mpi":
        hosts = [hostfile_option(program), config.launch.hostfile] if config.launch.hostfile else []
        return Launch(n, why + f", started by {program}", [program, *words[1:], "-n", str(n), *hosts,
                                                            *rank_command(config.script, argv, n, heartbeat)],
                      heartbeat=heartbeat)
    if config.launch.backend == "mpi":
        raise ConfigError("--mpi.launcher=cmd starts the ranks without MPI: leave --mpi.backend unset or use torch")
    rendezvous, log = exp.rendezvous(uuid.uuid4().hex), exp.rank_logs()
    return Launch(n, why + f", started as one array job of {program}",
                  [program, *words[1:], "--max-jobs-run", str(n), f"JOB=1:{n}", log,
                   *rank_command(config.script, argv, n, heartbeat), "--mpi.job=JOB", "--mpi.backend=torch",
                   f"--mpi.rendezvous={rendezvous}"], rendezvous, heartbeat,
                  local=os.path.basename(program) == "run.pl")


# -- running it -------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first seen first."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_all(proc: subprocess.Popen) -> None:
    """SIGTERM (and SIGCONT, so that a stopped rank gets it) to the launcher's session and every
    descendant, SIGKILL to what is left after the grace period."""
    pids = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *pids]:
            try:
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + (GRACE_SECONDS if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline and any(_alive(p) for p in [proc.pid, *pids]):
            proc.poll()
            time.sleep(0.05)
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def last_model(exp_dir: str) -> int | None:
    done = ExpDir(exp_dir).numbered_models()
    return done[-1] if done else None


def first_failure(messages: list[str]) -> str:
    """A rank's own verdict (an error, a watchdog naming a silent rank) comes before the ranks the
    launcher killed after it; among ranks that just ended, the earliest exit monitor's time."""
    verdicts = [m for m in messages if not MONITOR_LINE.search(m)]
    return verdicts[0] if verdicts else min(messages, key=lambda m: MONITOR_LINE.search(m).group(1))


def print_failure_reports(script: str, exp_dir: str, num_ranks: int, since: float, code: int = 1,
                          output: LauncherOutput | None = None, verbose: bool = False) -> None:
    """The failed launch as one line, the first failure (`first_failure` over what the failed ranks
    left in log/rank.R.failed: the MPI launcher's banner names a rank it killed after the first one
    died), then the resume line; the ranks' details stay in log/rank.R.failed and log/launcher.log
    (launch_report.failure_lines; `verbose`: the failure's traceback first)."""
    if output is not None:
        output.close()   # every line the launcher wrote is in (held back or forwarded)
    print_lines(failure_lines(script, exp_dir, num_ranks, since, code, first_failure, output, verbose))


def prepare_launch(launch: Launch, config: RunConfig) -> None:
    """Before the ranks start: no report or job log of an earlier run may end this one, the heartbeat
    file names this process, and an array job's rendezvous file holds a fresh secret (mode 0600)."""
    exp = ExpDir(config.dir)
    os.makedirs(exp.log_dir, exist_ok=True)
    for rank in range(launch.num_ranks):
        for path in (exp.rank_failed(rank), *([exp.rank_log(rank + 1)] if launch.rendezvous else [])):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    if launch.heartbeat:
        write_text(launch.heartbeat, f"{config.script}, pid {os.getpid()} on {socket.gethostname()}\n")
    if launch.rendezvous:
        new_rendezvous(launch.rendezvous, launch.local)


def job_exit_code(log: str) -> int | None:
    """The exit code an array job's log ends with (JOB_ENDED), None while the job runs."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    ends = JOB_ENDED.findall(tail)
    return int(ends[-1][0] or ends[-1][1]) if ends else None


def array_job_failed(exp_dir: str, num_ranks: int) -> bool:
    """Whether a rank of an array job failed: it left log/rank.R.failed, or its job's log ends with a
    non-zero code (a rank that ended before it could report, or was killed with its exit monitor).
    prepare_launch removed the earlier runs' files."""
    exp = ExpDir(exp_dir)
    return any(os.path.exists(exp.rank_failed(rank)) for rank in range(num_ranks)) or \
        any(job_exit_code(exp.rank_log(job)) for job in range(1, num_ranks + 1))


def touch(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.utime(path)


def run_launch(launch: Launch, config: RunConfig, verbose: bool = False) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(config.launch.num_threads))
    prepare_launch(launch, config)
    try:
        output = LauncherOutput(ExpDir(config.dir).launcher_log)
    except OSError as e:
        print(f"{config.script}: error: {ExpDir(config.dir).launcher_log}: cannot write: {e.strerror}", file=sys.stderr)
        return 1
    print("# " + shlex.join(launch.command), file=sys.stderr, flush=True)
    started = time.time()
    received: list[int] = []
    failed = False   # under --mpi.launcher=cmd: a rank failed, and this process ends the array job
    proc = subprocess.Popen(launch.command, env=env, start_new_session=True,   # its own group: we end it
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output.start(proc.stdout, sys.stdout)   # the ranks' lines live, but error reports: log/launcher.log
    output.start(proc.stderr, sys.stderr)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        beat = watched = 0.0
        while proc.poll() is None and not received and not failed:
            if time.monotonic() - beat >= LAUNCHER_HEARTBEAT_S:
                touch(launch.heartbeat)
                beat = time.monotonic()
            if launch.rendezvous and time.monotonic() - watched >= 0.5:
                failed = array_job_failed(config.dir, launch.num_ranks)
                watched = time.monotonic()
            time.sleep(0.1)
        if failed:
            time.sleep(FAILURE_GRACE_SECONDS)   # the reports of the ranks the failure reached
            stop_all(proc)
        if received:
            stop_all(proc)
            output.close()   # the ended ranks' banners and exit monitors stay in log/launcher.log
            remove_stale_temporaries(config.dir)
            name = signal.Signals(received[0]).name
            stage = last_model(config.dir)
            resume = f"; resume with --stage {stage}" if stage is not None else ""
            print(f"{config.script}: {name}: stopped the launcher and all {launch.num_ranks} ranks{resume}",
                  file=sys.stderr)
            return 128 + received[0]
    finally:
        output.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for path in (launch.rendezvous, launch.heartbeat):
            if path and os.path.exists(path):
                os.remove(path)
    if proc.returncode != 0:
        remove_stale_temporaries(config.dir)   # of ranks killed mid-write; all of them have ended
        print_failure_reports(config.script, config.dir, launch.num_ranks, started, proc.returncode, output,
                              verbose)
    return 1 if failed else proc.returncode


def main(argv: list[str], script: str = DEFAULT_SCRIPT) -> int:
    """steps/kaldi_avg/<script> (train_rnn.py, train_dnn.py: options.SCRIPTS) with `argv`."""
    args = get_parser(script).parse_args(argv)   # unknown options fail here, naming the closest ones
    try:
        config = RunConfig.from_args(args)
        launch = plan_launch(argv, config)
        check_log_dir(config.dir)   # a read-only --dir: one line, before any rank or lock
    except UsageError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        return 1
    print(f"{script}: {launch.why}", file=sys.stderr, flush=True)
    if not launch.command:   # one rank, in this process: it takes the directory's lock itself
        return with_resume_line(script, config.dir,
                                rank_main([script, *argv, "--mpi.num-ranks=1"]))
    try:
        lock = RunLock.acquire(ExpDir(config.dir).lock, script)
    except UsageError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        return 1
    with lock:
        return run_launch(launch, config, verbose=args.verbose > 0)
