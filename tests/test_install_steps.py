"""Installed use in a Kaldi checkout (kaldi_avg/install_steps.py): `kaldi-avg install-steps` writes
wrappers into Kaldi's steps/ that run under the installing Python with no venv on PATH; the clone's
own steps/kaldi_avg scripts move themselves to the clone's venv; run.pl is found in a recipe's
utils/ and in the package; the wheel holds what the installed command needs. The end-to-end check
(a fresh venv, `pip install .[all]`, a training run from a recipe) runs only when asked for."""
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

from kaldi_avg.cli import main as kaldi_avg_main
from kaldi_avg.install_steps import InstallStepsError, install_steps
from kaldi_avg.train.config import ConfigError
from kaldi_avg.train.launch import BUNDLED_PROGRAMS, resolve_program
from kaldi_avg.train.options import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BARE_PATH = "/usr/bin:/bin"   # what a recipe has before path.sh: no venv, no utils/
FRESH_VENV = "KALDI_AVG_TEST_FRESH_VENV"


def bare_env(**extra) -> dict:
    return {"PATH": BARE_PATH, "HOME": os.environ.get("HOME", "/"), "LC_ALL": "C", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture
def kaldi_root(tmp_path):
    """$KALDI_ROOT/egs/wsj/s5/{steps/nnet3/, utils/run.pl} and a recipe egs/mini/s5 whose steps and
    utils link there, as Kaldi's recipes do. Returns (wsj steps dir, recipe dir)."""
    wsj = tmp_path / "kaldi" / "egs" / "wsj" / "s5"
    (wsj / "steps" / "nnet3").mkdir(parents=True)
    (wsj / "utils").mkdir()
    shutil.copy(os.path.join(ROOT, "utils", "run.pl"), wsj / "utils" / "run.pl")
    recipe = tmp_path / "kaldi" / "egs" / "mini" / "s5"
    recipe.mkdir(parents=True)
    (recipe / "steps").symlink_to("../../wsj/s5/steps")
    (recipe / "utils").symlink_to("../../wsj/s5/utils")
    return wsj / "steps", recipe


def test_install_writes_executable_wrappers_run_by_this_python(kaldi_root, capsys):
    steps, _ = kaldi_root
    assert kaldi_avg_main(["install-steps", str(steps)]) == 0
    written = sorted(os.path.relpath(os.path.join(d, f), steps / "kaldi_avg")
                     for d, _, files in os.walk(steps / "kaldi_avg") for f in files)
    assert written == sorted(SCRIPTS)   # no temporaries left
    for script in SCRIPTS:
        path = steps / "kaldi_avg" / script
        text = path.read_text()
        assert text.splitlines()[0] == f"#!{sys.executable}"
        assert f"main(sys.argv[1:], script={script!r})" in text
        assert os.stat(path).st_mode & stat.S_IXUSR
    err = capsys.readouterr().err
    assert all(f"wrote {steps / 'kaldi_avg' / s} (runs {sys.executable})" in err for s in SCRIPTS)


def _installed_in_this_python() -> bool:
    """The wrappers import kaldi_avg without the checkout on sys.path: it must be installed."""
    return subprocess.run([sys.executable, "-c", "import kaldi_avg"], cwd="/", env=bare_env(),
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _installed_in_this_python(), reason="kaldi-avg is not installed in this Python "
                    "(tools/install.sh installs it in development mode)")
def test_installed_scripts_run_from_a_recipe_without_the_venv_on_path(kaldi_root):
    steps, recipe = kaldi_root
    install_steps(str(steps))
    for script in SCRIPTS:
        r = subprocess.run([f"steps/kaldi_avg/{script}", "--help"], cwd=recipe, env=bare_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"usage: steps/kaldi_avg/{script}" in r.stdout and "--trainer.num-epochs" in r.stdout


def test_refuses_what_is_not_kaldis_steps_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "recipe").mkdir()
    for target, why in ((tmp_path / "missing", "not a directory"), (tmp_path / "file", "not a directory"),
                        (tmp_path / "recipe", "has no nnet3/")):
        assert kaldi_avg_main(["install-steps", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"kaldi-avg install-steps: error: {target}: {why}") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["file", "recipe"] and not os.listdir(tmp_path / "recipe")


def test_refuses_an_interpreter_a_shebang_cannot_name(kaldi_root):
    steps, _ = kaldi_root
    with pytest.raises(InstallStepsError, match="cannot be a #! line"):
        install_steps(str(steps), python="/my venvs/a/bin/python")
    assert not os.path.exists(steps / "kaldi_avg")


def test_replaces_its_own_wrappers_but_no_other_file(kaldi_root):
    steps, _ = kaldi_root
    install_steps(str(steps), python="/old/venv/bin/python")
    install_steps(str(steps))
    first, second, *_ = (steps / "kaldi_avg" / s for s in SCRIPTS)
    assert first.read_text().startswith(f"#!{sys.executable}\n")
    second.write_text("#!/usr/bin/env python3\n# a user's own script\n")
    with pytest.raises(InstallStepsError, match=f"{second} exists and was not written by"):
        install_steps(str(steps), python="/new/venv/bin/python")
    assert second.read_text().endswith("a user's own script\n")
    assert first.read_text().startswith(f"#!{sys.executable}\n")   # nothing written when one is refused


@pytest.mark.skipif(not os.access(os.path.join(ROOT, "venv", "bin", "python"), os.X_OK),
                    reason="no venv in this checkout (tools/install.sh creates it)")
def test_the_clones_scripts_run_under_its_venv_without_it_on_path():
    # through the recipe's steps symlink, with the system python3 of the shebang (which lacks torch here)
    recipe = os.path.join(ROOT, "egs", "fsdd", "s5")
    for script in sorted(SCRIPTS):
        r = subprocess.run([f"steps/kaldi_avg/{script}", "--help"], cwd=recipe, env=bare_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"usage: steps/kaldi_avg/{script}" in r.stdout


def test_run_pl_is_found_in_the_recipe_utils_then_in_the_package(kaldi_root, tmp_path, monkeypatch):
    _, recipe = kaldi_root
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))   # path.sh not sourced
    monkeypatch.chdir(recipe)
    assert resolve_program("run.pl") == os.path.join(recipe, "utils", "run.pl")   # Kaldi's own
    monkeypatch.chdir(tmp_path)
    assert resolve_program("run.pl") == os.path.join(BUNDLED_PROGRAMS, "run.pl")
    with pytest.raises(ConfigError, match="'queue.pl' was not found on PATH"):
        resolve_program("queue.pl")


def _copy_sources(dst: str) -> str:
    """What `pip install .` packs, copied: pip builds inside the source tree (build/), and a test
    must not write into the checkout."""
    os.makedirs(os.path.join(dst, "utils"))
    shutil.copy(os.path.join(ROOT, "setup.py"), dst)
    shutil.copy(os.path.join(ROOT, "utils", "run.pl"), os.path.join(dst, "utils"))
    shutil.copytree(os.path.join(ROOT, "kaldi_avg"), os.path.join(dst, "kaldi_avg"), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_the_wheel_holds_what_the_installed_command_needs(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this Python")
    src = _copy_sources(str(tmp_path / "src"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp_path / "out"), src], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = os.listdir(tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "out" / wheel) as z:
        names = set(z.namelist())
        assert {"kaldi_avg/cli.py", "kaldi_avg/install_steps.py", "kaldi_avg/train/launch.py"} <= names
        run_pl = z.getinfo("kaldi_avg/bin/run.pl")   # a copy of utils/run.pl, executable, not a link
        mode = run_pl.external_attr >> 16
        assert stat.S_ISREG(mode) and mode & stat.S_IXUSR
        with open(os.path.join(ROOT, "utils", "run.pl"), "rb") as f:
            assert z.read(run_pl) == f.read()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        assert "kaldi-avg = kaldi_avg.cli:main" in entry_points


@pytest.mark.skipif(os.environ.get(FRESH_VENV) != "1", reason=f"{FRESH_VENV}=1 runs it: a new venv with "
                    "`pip install .[all]` (torch included: minutes, about 1.3 GB)")
def test_a_fresh_venv_trains_from_a_kaldi_recipe_without_path_or_activation(kaldi_root, tmp_path):
    pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the test experiment's transition model")
    from tests.train.experiment import make_experiment, train_args
    steps, recipe = kaldi_root
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    src = _copy_sources(str(tmp_path / "src"))
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{src}[all]",
                        "-c", os.path.join(ROOT, "requirements.txt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(venv / "bin" / "kaldi-avg"), "install-steps", str(steps)], cwd="/", env=bare_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (steps / "kaldi_avg" / "train_rnn.py").read_text().startswith(f"#!{venv}/bin/python")
    exp = make_experiment(str(tmp_path / "exp"))
    # two ranks as one run.pl array job: the recipe's utils/run.pl, found without path.sh
    args = train_args(exp, **{"--trainer.num-epochs": "1"}) + ["--mpi.launcher=cmd", "--cmd=run.pl"]
    r = subprocess.run(["steps/kaldi_avg/train_rnn.py", *args], cwd=recipe, env=bare_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"started as one array job of {recipe}/utils/run.pl" in r.stderr
    assert os.path.exists(os.path.join(exp["exp"], "final.mdl"))
