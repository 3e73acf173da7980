"""How the ranks start (kaldi_avg/train/launch.py, kaldi_avg/train/cli.py): Kaldi's command line alone
runs num-jobs-final ranks at once; a Kaldi `$cmd` array job (run.pl, a queue.pl stand-in) gives the
mpiexec run's bytes; torchrun-style processes train one model together; launches that disagree with
the communicator are refused; SIGTERM leaves no process behind; two hosts (network namespaces joined by
a veth pair) started through --mpi.hostfile and --mpi.launcher give the one-host bytes. Nothing waits
or runs unguarded: torchrun's ranks end with it, a missing torch peer is a bounded, announced wait and
one line, one run per experiment directory, and an array job meets on loopback behind a secret."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.train.cli import main as rank_main
from kaldi_avg.train.runlock import RunLock

from .experiment import make_experiment, train_args
from .processes import listening_sockets, processes_mentioning, rank_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_RNN = os.path.join(ROOT, "steps", "kaldi_avg", "train_rnn.py")
FAKE_QUEUE = os.path.join(ROOT, "tests", "train", "bin", "queue.pl")
NETNS_SSH = os.path.join(ROOT, "tests", "train", "bin", "netns-ssh")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
needs_mpiexec = pytest.mark.skipif(not MPIEXEC, reason="no mpiexec")


def kaldi_args(exp, **over) -> list[str]:
    """Kaldi's train_rnn.py options only: no --mpi.* at all."""
    return [a for a in train_args(exp, **over) if not a.startswith("--mpi.")]


def train_rnn(args, timeout=120, env=ENV):
    return subprocess.run([sys.executable, TRAIN_RNN, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def final_bytes(exp) -> bytes:
    with open(os.path.join(exp["exp"], "final.mdl"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def mpiexec_run(tmp_path_factory):
    if not MPIEXEC:
        pytest.skip("no mpiexec")
    exp = make_experiment(str(tmp_path_factory.mktemp("mpiexec")))
    r = train_rnn(kaldi_args(exp))
    assert r.returncode == 0, r.stderr[-3000:]
    return exp, r


@needs_mpiexec
def test_kaldis_options_alone_run_num_jobs_final_ranks_at_once(mpiexec_run):
    exp, r = mpiexec_run
    assert "2 rank(s): num-jobs-final=2 capped by" in r.stderr, r.stderr[-2000:]
    assert "[rank 1] rank 1 of 2 on" in r.stderr and "mpiexec -n 2" in r.stderr


@needs_mpiexec
@pytest.mark.parametrize("cmd", ["run.pl", FAKE_QUEUE + " --mem 2G"])
def test_kaldi_cmd_array_job_gives_the_mpiexec_bytes(mpiexec_run, tmp_path, cmd):
    exp = make_experiment(str(tmp_path))
    launcher = [] if "queue.pl" in cmd else ["--mpi.launcher=cmd"]   # a cluster script is cmd by default
    r = train_rnn(kaldi_args(exp) + [f"--cmd={cmd}", *launcher])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "started as one array job of" in r.stderr and "JOB=1:2" in r.stderr
    for job in (1, 2):   # every rank's log in log/, as Kaldi's jobs
        with open(os.path.join(exp["exp"], "log", f"rank.{job}.log")) as f:
            assert f"[rank {job - 1}]" in f.read()
    assert final_bytes(exp) == final_bytes(mpiexec_run[0])
    assert not glob.glob(os.path.join(exp["exp"], "log", ".rendezvous.*"))   # the meeting file is removed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_style(args, world=2):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "kaldi_avg.train.cli", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(ENV, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r in range(world)]
    return [(p.wait(timeout=120), p.stderr.read()) for p in procs]


@needs_mpiexec
def test_torchrun_style_processes_train_one_model_together(mpiexec_run, tmp_path):
    exp = make_experiment(str(tmp_path))
    results = _torchrun_style(kaldi_args(exp) + ["--mpi.backend=torch"])
    assert [code for code, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert "2 rank(s)" in results[0][1] and "[rank 1]" in results[1][1]
    assert final_bytes(exp) == final_bytes(mpiexec_run[0])


def test_a_launch_the_communicator_disagrees_with_is_refused(tmp_path):
    exp = make_experiment(str(tmp_path))
    # WORLD_SIZE=2 but the default MPI backend sees a world of one: it must not train two copies
    for code, err in _torchrun_style(kaldi_args(exp)):
        assert code == 1 and "the launcher started 2 processes (WORLD_SIZE=2)" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(exp["exp"], "final.mdl"))
    for code, err in _torchrun_style(kaldi_args(exp) + ["--mpi.backend=torch", "--mpi.num-ranks=3"]):
        assert code == 1 and "--mpi.num-ranks=3 but this process is one of 2" in err


@needs_mpiexec
def test_sigterm_ends_the_launcher_and_every_rank(tmp_path):
    exp = make_experiment(str(tmp_path))
    proc = subprocess.Popen([sys.executable, TRAIN_RNN, *kaldi_args(exp, **{"--trainer.num-epochs": "60"})],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 90
    seen = ""
    while "iteration 2/" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "iteration 2/" in seen, seen[-2000:]
    assert len(processes_mentioning(exp["exp"])) >= 3   # launcher, mpiexec, ranks
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    rest = proc.stderr.read()
    assert code == 128 + signal.SIGTERM and time.monotonic() - t0 < 10
    assert "stopped the launcher and all 2 ranks; resume with --stage" in rest, rest[-2000:]
    time.sleep(0.5)
    assert processes_mentioning(exp["exp"]) == []
    assert not os.path.exists(os.path.join(exp["exp"], "kaldi_avg.lock"))   # released
    assert not os.path.exists(os.path.join(exp["exp"], "log", "launcher.heartbeat"))


def _wait_until(said, stream=None, path=None, timeout=120) -> str:
    """What a run printed on `stream`, or wrote in `path`, until `said` shows (or the timeout)."""
    seen, deadline = "", time.monotonic() + timeout
    while said not in seen and time.monotonic() < deadline:
        if stream is not None:
            line = stream.readline()
            if not line:
                break
            seen += line
        else:
            time.sleep(0.2)
            if os.path.exists(path):
                with open(path) as f:
                    seen = f.read()
    return seen


def _gone_within(text: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(0.25)
    return processes_mentioning(text) == []


def test_torchruns_ranks_end_with_it(tmp_path):
    exp = make_experiment(str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "kaldi_avg.train.cli", *kaldi_args(exp, **{"--trainer.num-epochs": "200"}),
                             "--mpi.backend=torch"], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        seen = _wait_until("iteration 2/", stream=proc.stderr)
        assert "iteration 2/" in seen, seen[-3000:]
        assert len(processes_mentioning(exp["exp"])) >= 3   # torchrun and its two ranks
        proc.kill()   # SIGKILL: torchrun cannot end its ranks; PR_SET_PDEATHSIG does
        proc.wait()
        assert _gone_within(exp["exp"], 10), "torchrun's ranks outlived it"
        reports = ""
        for path in glob.glob(os.path.join(exp["exp"], "log", "rank.*.failed")):
            with open(path) as f:
                reports += f.read()
        assert " failed (" not in reports, reports   # the agent's end is no rank's own failure (its store went)
    finally:
        for pid in processes_mentioning(exp["exp"]):
            os.kill(pid, signal.SIGKILL)


def test_a_missing_torch_peer_is_a_bounded_announced_wait_and_one_line(tmp_path):
    exp = make_experiment(str(tmp_path))
    port = _free_port()
    where = f"127.0.0.1:{port}"
    for rank, said, error in ((0, f"waiting for 1 more rank(s) at {where} (timeout 4 s)",
                               f"rank(s) 1 of 2 did not join at {where} within 4 s"),
                              (1, f"waiting for rank 0's store at {where} (timeout 4 s)",
                               f"nothing answered at {where} within 4 s")):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "kaldi_avg.train.cli", *kaldi_args(exp), "--mpi.backend=torch"],
                           cwd=ROOT, capture_output=True, text=True, timeout=90,
                           env=dict(ENV, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                    MASTER_PORT=str(port), KALDI_AVG_RENDEZVOUS_TIMEOUT="4"))
        assert r.returncode == 1 and time.monotonic() - t0 < 60, r.stderr[-3000:]
        assert r.stderr.count(said) == 1, r.stderr[-3000:]
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and error in errors[0] and "Traceback" not in r.stderr, r.stderr[-3000:]


def test_one_run_per_experiment_directory(tmp_path, capsys):
    exp = make_experiment(str(tmp_path))
    lock = os.path.join(exp["exp"], "kaldi_avg.lock")
    holder = f"is in use by another run: pid {os.getpid()} on {socket.gethostname()} (another run, started "
    with RunLock.acquire(lock, "another run"):
        assert rank_main(train_args(exp)) == 1   # a rank started by hand: rank 0 asks for the lock
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and holder in errors[0], errors
        r = train_rnn(kaldi_args(exp) + ["--mpi.num-ranks=2"])   # the launcher asks before any rank starts
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert r.returncode == 1 and len(errors) == 1 and holder in errors[0], r.stderr[-2000:]
        assert not glob.glob(os.path.join(exp["exp"], "*.mdl"))
    assert not os.path.exists(lock)
    dead = subprocess.Popen(["true"])   # a holder that is gone: its lock is replaced, saying so
    dead.wait()
    with open(lock, "w") as f:
        f.write(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "start_ticks": 1, "program": "x"}}\n')
    assert rank_main(train_args(exp, **{"--exit-stage": "1"})) == 0
    assert f"replaced the stale lock {lock} of pid {dead.pid} on" in capsys.readouterr().err
    assert not os.path.exists(lock)


def test_an_array_job_meets_on_loopback_behind_a_secret(tmp_path):
    """run.pl's ranks all run here: the store and gloo listen on 127.0.0.1 only; the rendezvous file
    (mode 0600) holds the run's secret; a second run on the directory is refused, naming this one."""
    exp = make_experiment(str(tmp_path))
    args = kaldi_args(exp, **{"--trainer.num-epochs": "200"}) + ["--mpi.launcher=cmd", "--mpi.num-ranks=2"]
    proc = subprocess.Popen([sys.executable, TRAIN_RNN, *args], stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        seen = _wait_until("iteration 2/", path=os.path.join(exp["exp"], "log", "rank.1.log"))   # rank 0's
        assert "iteration 2/" in seen, seen[-3000:]
        [rendezvous] = glob.glob(os.path.join(exp["exp"], "log", ".rendezvous.*"))
        assert os.stat(rendezvous).st_mode & 0o777 == 0o600
        with open(rendezvous) as f:
            fields = dict(line.split(" ", 1) for line in f.read().splitlines())
        assert len(fields["secret"]) == 32 and fields["address"].startswith("127.0.0.1 "), fields
        ranks = [rank_process(exp["exp"], rank) for rank in (0, 1)]
        listening = listening_sockets(ranks)
        assert ("127.0.0.1", int(fields["address"].split()[1])) in listening, listening
        assert {address for address, _ in listening} == {"127.0.0.1"}, listening   # the store and gloo's pairs
        r = train_rnn(args, timeout=60)
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
        assert f"is in use by another run: pid {proc.pid} on {socket.gethostname()} (train_rnn.py" in errors[0]
        assert proc.poll() is None   # the running one goes on
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 128 + signal.SIGTERM
    assert not glob.glob(os.path.join(exp["exp"], "log", ".rendezvous.*"))
    assert not os.path.exists(os.path.join(exp["exp"], "kaldi_avg.lock"))


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *(["-n", netns] if netns else []), *args], capture_output=True, text=True)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair, each with one address on its end and nothing
    else but loopback: traffic between them can only cross the veth, and none leaves the machine."""
    if not shutil.which("ip") or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2's ip")
    tag = f"ka{os.getpid() % 100000}"
    hosts = [(f"{tag}a", f"{tag}va", "10.77.0.1"), (f"{tag}b", f"{tag}vb", "10.77.0.2")]
    made = []
    try:
        for ns, _, _ in hosts:
            r = _ip("netns", "add", ns)
            if r.returncode:
                pytest.skip(f"cannot make a network namespace here: {r.stderr.strip()}")
            made.append(ns)
        (a, va, _), (b, vb, _) = hosts
        steps = [(None, "link", "add", va, "type", "veth", "peer", "name", vb),
                 (None, "link", "set", va, "netns", a), (None, "link", "set", vb, "netns", b)]
        for ns, dev, addr in hosts:
            steps += [(ns, "addr", "add", f"{addr}/24", "dev", dev), (ns, "link", "set", dev, "up"),
                      (ns, "link", "set", "lo", "up")]
        for ns, *args in steps:
            r = _ip(*args, netns=ns)
            if r.returncode:
                pytest.skip(f"cannot join namespaces with a veth pair here: ip {' '.join(args)}: {r.stderr.strip()}")
        yield hosts
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def _rx_bytes(ns: str, dev: str) -> int:
    r = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes"],
                       capture_output=True, text=True, check=True)
    return int(r.stdout)


@needs_mpiexec
def test_two_hosts_through_hostfile_and_launcher_give_the_one_host_bytes(mpiexec_run, two_hosts, tmp_path):
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "HYDRA" not in version:
        pytest.skip("the namespace launcher wrapper is written for MPICH's hydra (-launcher-exec)")
    exp = make_experiment(str(tmp_path))
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{addr}:1\n" for _, _, addr in two_hosts))
    # ranks talk over TCP only: UCX's shared-memory transports would bypass the veth on one machine
    launcher = f"mpiexec -launcher ssh -launcher-exec {NETNS_SSH} -genv UCX_TLS tcp,self"
    env = dict(ENV, NETNS_HOSTS=" ".join(f"{addr}={ns}" for ns, _, addr in two_hosts))
    (ns_a, dev_a, _), (ns_b, dev_b, _) = two_hosts
    before = _rx_bytes(ns_a, dev_a), _rx_bytes(ns_b, dev_b)
    r = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, TRAIN_RNN, *kaldi_args(exp),
                        f"--mpi.launcher={launcher}", f"--mpi.hostfile={hostfile}"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 rank(s): one per job (num-jobs-final=2), placed by the cluster" in r.stderr, r.stderr[-2000:]
    received = _rx_bytes(ns_a, dev_a) - before[0], _rx_bytes(ns_b, dev_b) - before[1]
    model_bytes = os.path.getsize(os.path.join(exp["exp"], "final.mdl"))
    # iterations 4-7 average two jobs: each end receives at least a model's worth per averaging
    assert min(received) > 4 * model_bytes, (received, model_bytes)
    assert "unexpected tag-receive" not in r.stderr   # UCX's warning at MPI_Finalize over TCP
    assert f"[rank 1] rank 1 of 2 on {ns_b}," in r.stderr   # the wrapper names each host after its namespace
    assert final_bytes(exp) == final_bytes(mpiexec_run[0])
