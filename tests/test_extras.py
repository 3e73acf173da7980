"""Without an optional extra (setup.py's EXTRAS) the command says in one line what to install:
`[mpi]` for the MPI backend and a rank that expected a launcher, `[plots]` for `kaldi-avg experiment`;
training without matplotlib goes on and warns once that it cannot draw progress.png."""
import sys

import pytest

from kaldi_avg.cli import main as kaldi_avg
from kaldi_avg.errors import MissingExtraError
from kaldi_avg.train import diagnostics
from kaldi_avg.train.cli import WORLD_SIZE_VARIABLES
from kaldi_avg.train.cli import main as rank_main
from kaldi_avg.train.expdir import ExpDir


@pytest.fixture(autouse=True)
def no_mpi_backend_left_behind():
    """A backend imported here without mpi4py stays out of sys.modules after the test (importing the
    package imports no backend: tests/parallel/test_comm.py)."""
    had = "kaldi_avg.parallel.mpi_backend" in sys.modules
    yield
    if not had:
        sys.modules.pop("kaldi_avg.parallel.mpi_backend", None)


def uninstalled(monkeypatch, *packages):
    """Imports of `packages` fail as when they are not installed; modules that imported them are
    imported again."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages or name.startswith(("kaldi_avg.experiments.command",
                                                               "kaldi_avg.experiments.plots")):
            monkeypatch.delitem(sys.modules, name)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_kaldi_avg_experiment_without_matplotlib_says_to_install_plots(monkeypatch, capsys):
    uninstalled(monkeypatch, "matplotlib")
    assert kaldi_avg(["experiment", "E1"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("kaldi-avg experiment: error:") and "pip install 'kaldi-avg[plots]'" in line


def test_training_without_matplotlib_warns_once_that_progress_png_is_not_drawn(monkeypatch, capsys, tmp_path):
    uninstalled(monkeypatch, "matplotlib")
    monkeypatch.setattr(diagnostics, "_NO_PLOTS_SAID", [])
    exp = ExpDir(str(tmp_path))
    assert diagnostics.plot_progress(exp) is None and diagnostics.plot_progress(exp) is None
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "progress.png is not drawn" in warnings[0], warnings
    assert "pip install 'kaldi-avg[plots]'" in warnings[0]


def test_the_mpi_backend_without_mpi4py_says_to_install_mpi(monkeypatch):
    uninstalled(monkeypatch, "mpi4py")
    from kaldi_avg.parallel import make_communicator
    with pytest.raises(MissingExtraError, match=r"needs mpi4py .*pip install 'kaldi-avg\[mpi\]'"):
        make_communicator("mpi")


def test_a_rank_of_several_without_mpi4py_says_to_install_mpi(monkeypatch, capsys, tmp_path):
    uninstalled(monkeypatch, "mpi4py")
    for var in WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert rank_main([f"--feat-dir={tmp_path}/data", f"--ali-dir={tmp_path}/ali", f"--dir={tmp_path}/exp",
                      "--mpi.num-ranks=2"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--mpi.num-ranks=2 but this process is one of 1" in line and "pip install 'kaldi-avg[mpi]'" in line
