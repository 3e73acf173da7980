"""What train_rnn.py shows of a launch (kaldi_avg/train/launch_report.py): the ranks' progress lines
live, none of the echoes of an error (the ranks' own lines and tracebacks, MPICH's MPI_Abort line
and BAD TERMINATION banner, hydra's and Open MPI's words, run.pl's), every byte in log/launcher.log;
the report of a failed launch is the first failure in one line (the traceback with --verbose), then
the resume line."""
import io
import os

from kaldi_avg.train.launch import first_failure
from kaldi_avg.train.launch_report import LauncherOutput, failure_lines

PROGRESS = ["20:30:38 [rank 0] rank 0 of 2 on vm, device cpu",
            "20:30:38 [rank 1] rank 1 of 2 on vm, device cpu",
            "20:30:40 [rank 0] iteration 2/8: jobs 1 lrate 0.01 objf -1.2 (0.3 s)",
            "20:30:41 [rank 0] skipped 3 chunks: 3 left after the last full minibatch (log/skipped.log)"]

ECHOES = """Traceback (most recent call last):
  File "/x/kaldi_avg/train/driver.py", line 147, in prepare
    store = check_inputs(config, trans_model, reference.input_dim(), comm, ivectors)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
KeyError: 'spk0-utt02'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/x/kaldi_avg/train/cli.py", line 68, in main
ValueError: bad
kaldi_avg.parallel: rank 1/2 failed (main): ValueError: bad
rank 1/2: error: data/feats.scp: utterance spk0-utt02 has dim 14, the network's input expects 13
train_rnn.py: error: --mpi.num-ranks=2 but this process is one of 1 (no launcher environment found)
Abort(1) on node 1 (rank 1 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 1) - process 1
kaldi_avg.parallel: rank 0/2 (pid 17081 on vm) ended without finishing at 2026-12-07T20:30:38.632471

===================================================================================
=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES
=   PID 17082 RUNNING AT vm
=   EXIT CODE: 9
=   CLEANING UP REMAINING PROCESSES
=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES
===================================================================================
YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)
This typically refers to a problem with your application.
Please see the FAQ page for debugging suggestions
[mpiexec@vm] HYDU_sock_write (lib/utils/sock.c:250): write error (Bad file descriptor)
[proxy:0@vm] HYD_pmcd_pmip_control_cmd_cb (proxy/pmip_cb.c:480): assert (!closed) failed
--------------------------------------------------------------------------
MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD
with errorcode 1.
--------------------------------------------------------------------------
[vm:01234] *** An error occurred in MPI_Allreduce
run.pl: 2 / 2 failed, log is in exp/log/rank.*.log
"""


def relay(tmp_path, text: str) -> tuple[str, LauncherOutput]:
    """`text` through LauncherOutput as a launcher's stderr; returns what reached the console."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(text.encode())
    console = io.StringIO()
    output = LauncherOutput(str(tmp_path / "launcher.log"))
    with os.fdopen(read_end, "rb") as pipe:
        output.start(pipe, console)
        output.close()
    return console.getvalue(), output


def test_the_console_gets_the_progress_lines_and_the_log_every_byte(tmp_path):
    text = "\n".join([PROGRESS[0], PROGRESS[1], *ECHOES.splitlines()[:14], PROGRESS[2],
                      *ECHOES.splitlines()[14:], PROGRESS[3]]) + "\n"
    console, output = relay(tmp_path, text)
    assert console.splitlines() == PROGRESS
    assert (tmp_path / "launcher.log").read_text() == text
    assert "kaldi_avg.parallel: rank 1/2 failed (main): ValueError: bad" in output.held


def test_a_line_another_ranks_line_ran_into_is_cut_where_that_starts(tmp_path):
    console, output = relay(tmp_path, f"{PROGRESS[0]}kaldi_avg.parallel: rank 1/2: error: x\n"
                                      f"kaldi_avg.parallel: rank 1/2 failed (main): ValueError: bad{PROGRESS[1]}\n\n")
    assert console.splitlines() == PROGRESS[:2]
    assert output.held == ["kaldi_avg.parallel: rank 1/2: error: x", "kaldi_avg.parallel: rank 1/2 failed (main): "
                                                                     "ValueError: bad"]


def failed_rank(exp, rank, text, pid=4242, host="node7", at="2026-12-07T20:30:38.336578"):
    log = exp / "log"
    log.mkdir(parents=True, exist_ok=True)
    (log / f"rank.{rank}.failed").write_text(f"# pid {pid} on {host} at {at}\n{text}")


def test_the_report_is_the_first_failure_in_one_line_then_the_resume_line(tmp_path):
    exp = tmp_path / "exp"
    failed_rank(exp, 0, "kaldi_avg.parallel: rank 0/2: error: tree: not a Kaldi tree\n", at="2026-12-07T20:30:39")
    failed_rank(exp, 1, 'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: 3\n'
                        "kaldi_avg.parallel: rank 1/2 failed (main): KeyError: 3\n"
                        "kaldi_avg.parallel: rank 1/2 (pid 4242 on node7) ended without finishing at 2026-12-07T20:30:40\n")
    (exp / "3.mdl").write_bytes(b"")
    lines = failure_lines("train_rnn.py", str(exp), 2, 0.0, 1, first_failure)
    assert lines == [f"train_rnn.py: error: rank 1/2 (pid 4242 on node7) failed (main): KeyError: 3 (details: "
                     f"{exp}/log/rank.1.failed)",
                     "train_rnn.py: 3.mdl is the last finished iteration; resume with --stage 3"]
    verbose = failure_lines("train_rnn.py", str(exp), 2, 0.0, 1, first_failure, verbose=True)
    assert verbose[:3] == ["Traceback (most recent call last):", '  File "x.py", line 1', "KeyError: 3"]
    assert verbose[3:] == lines


def test_a_usage_error_is_the_line_one_rank_prints_and_a_killed_rank_names_its_pid_and_host(tmp_path):
    exp = tmp_path / "exp"
    failed_rank(exp, 1, "kaldi_avg.parallel: rank 1/2: error: data/feats.scp: utterance u has dim 14\n")
    assert failure_lines("train_dnn.py", str(exp), 2, 0.0, 1, first_failure) == \
        ["train_dnn.py: error: data/feats.scp: utterance u has dim 14"]
    (exp / "log" / "rank.1.failed").write_text(
        "kaldi_avg.parallel: rank 1/2 (pid 7 on node3) ended without finishing at 2026-12-07T20:30:41\n")
    failed_rank(exp, 0, "kaldi_avg.parallel: rank 0/2 (pid 6 on node2) ended without finishing at 2026-12-07T20:30:42\n")
    [line] = failure_lines("train_dnn.py", str(exp), 2, 0.0, 137, first_failure)
    assert line.startswith("train_dnn.py: error: rank 1/2 (pid 7 on node3) ended without finishing at"), line


def test_without_reports_the_ranks_or_the_launchers_own_words(tmp_path):
    exp = tmp_path / "exp"
    _, output = relay(tmp_path, "train_rnn.py: error: --mpi.num-ranks=2 but this process is one of 1\n" * 2)
    assert failure_lines("train_rnn.py", str(exp), 2, 0.0, 1, first_failure, output) == \
        ["train_rnn.py: error: --mpi.num-ranks=2 but this process is one of 1"]
    _, output = relay(tmp_path, "[mpiexec@vm] HYDU_create_process: execvp error on file nothere\n")
    [line] = failure_lines("train_rnn.py", str(exp), 2, 0.0, 255, first_failure, output)
    assert line.startswith("train_rnn.py: error: the launcher failed (exit 255): [mpiexec@vm] HYDU_create_process")
