"""run.pl's log layout: the start time is when the job started, not when the log was written."""
import time

from kaldi_avg.kaldi.runlog import write_run_log


def test_the_start_time_is_the_jobs_start(tmp_path):
    path = tmp_path / "log" / "job.1.log"
    write_run_log(str(path), "nnet3-train x", ["a line"], seconds=3 * 3600)
    lines = path.read_text().splitlines()
    assert lines[0] == "# nnet3-train x" and lines[3] == "a line"
    fmt = "%a %b %d %H:%M:%S %Z %Y"
    started = time.mktime(time.strptime(lines[1].removeprefix("# Started at "), fmt))
    ended = time.mktime(time.strptime(lines[5].split(" at ", 1)[1].split(",")[0], fmt))
    assert abs(ended - started - 3 * 3600) <= 1
    assert lines[4] == "# Accounting: time=10800 threads=1"
