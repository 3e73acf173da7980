"""How the ranks start (kaldi_avg/train/launch.py, kaldi_avg/train/cli.py): Kaldi's command line alone
runs num-jobs-final ranks at once; a Kaldi `$cmd` array job (run.pl, a queue.pl stand-in) gives the
mpiexec run's bytes; torchrun-style processes train one model together; launches that disagree with
the communicator are refused; SIGTERM leaves no process behind; two hosts (network namespaces joined by
a veth pair) started through --mpi.hostfile and --mpi.launcher give the one-host bytes."""
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

from .experiment import make_experiment, train_args
from .processes import processes_mentioning

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
