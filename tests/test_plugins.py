"""A model written outside the package reaches the installed ``pyro-vae``: by entry point
(an installed package's metadata), by ``--plugin`` (a module or a file) and by
``PYRO_VAE_PLUGINS``; a run folder remembers where its model came from, so the commands
after ``train`` need no flag; a broken plugin is one line and exit 2.

The model is the example package in ``examples/mixture_prior`` (the guide's example).
Each route runs in a fresh process, as a user's would: the registry starts empty there.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from conftest import FAST

from pyro_vae.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mixture_prior"
TRAIN = ["train", *FAST, "--epochs", "1", "--no-progress", "--model", "mogvae", "--modes", "3"]
TRAIN += ["--likelihood", "student-t"]

#: after training: the commands a user runs next, in a new process, without --plugin
AFTERWARDS = textwrap.dedent(
    """
    import sys
    from pyro_vae.cli import main
    from pyro_vae import open_run

    run = sys.argv[1]
    statuses = [
        main(["sample", "--run", run, "-n", "4"]),
        main(["evaluate", "--run", run, "--limit", "10", "--num-samples", "5", "--no-progress"]),
        main(["train", "--out", run, "--resume", "--epochs", "2", "--no-progress"]),
        main(["complete", "--run", run]),
    ]
    model, data, config, folder = open_run(run)
    print("STATUSES", statuses, type(model).__name__, model.modes, config.train.epochs)
    print("LIKELIHOOD", model.likelihood.config())
    """
)


def run_installed(command, env_path=(), **env) -> subprocess.CompletedProcess:
    """``command`` in a fresh process with ``env_path`` on ``PYTHONPATH``."""
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, env_path), *sys.path])
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)


def python(args, env_path=(), **env) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process with ``env_path`` on ``PYTHONPATH``."""
    return run_installed([sys.executable, *args], env_path, **env)


def check_afterwards(run: Path, env_path=()) -> None:
    done = python(["-c", AFTERWARDS, str(run)], env_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # sample, evaluate and resume succeed; complete is refused (a VAE has no condition)
    assert "STATUSES [0, 0, 0, 2] MoGVAE 3 2" in done.stdout, done.stdout[-2000:]
    assert "LIKELIHOOD {'name': 'student-t', 'df': 3.0, 'scale': 0.1}" in done.stdout
    refusal = [line for line in done.stderr.splitlines() if line.startswith("pyro-vae: error")]
    assert len(refusal) == 1 and "MoGVAE cannot complete" in refusal[0], done.stderr[-2000:]
    assert (run / "prior_samples_4.png").is_file() and (run / "eval_n10.json").is_file()


def test_a_plugin_file_trains_and_its_run_needs_no_flag_afterwards(tmp_path):
    # the one-file route: copies of the example's model and likelihood, one file each
    model, likelihood = tmp_path / "mog.py", tmp_path / "student.py"
    model.write_text((EXAMPLE / "pyro_vae_mixture" / "model.py").read_text())
    likelihood.write_text((EXAMPLE / "pyro_vae_mixture" / "likelihood.py").read_text())
    run = tmp_path / "run"
    plugins = ["--plugin", str(model), "--plugin", str(likelihood)]
    done = python(["-m", "pyro_vae", *plugins, *TRAIN, "--out", str(run)])
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((run / "config.json").read_text())["plugins"]
    assert recorded == {"model": str(model), "likelihood": str(likelihood)}
    check_afterwards(run)


def _install_metadata(site: Path) -> None:
    """What ``pip install examples/mixture_prior`` leaves for importlib.metadata: a
    dist-info folder with the entry points of the example's pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = site / f"pyro_vae_mixture-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
            for group, points in groups.items()
        )
    )


def test_an_installed_package_is_found_by_its_entry_point(tmp_path):
    site = tmp_path / "site"
    _install_metadata(site)
    run = tmp_path / "run"
    path = (site, EXAMPLE)
    helped = python(["-m", "pyro_vae", "train", "--help"], path)
    assert "--model {vae,cvae,regressor,hvae,vqvae,ssvae,mogvae}" in helped.stdout
    assert "student-t" in helped.stdout
    assert "--modes MODES" in helped.stdout
    # the installed console script, as a user types it
    script = Path(sys.executable).with_name("pyro-vae")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "pyro_vae"]
    done = run_installed([*command, *TRAIN, "--out", str(run)], path)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((run / "config.json").read_text())["plugins"]
    assert recorded == {
        "model": "pyro_vae_mixture.model",
        "likelihood": "pyro_vae_mixture.likelihood",
    }
    check_afterwards(run, path)


def test_the_environment_names_plugins_too(tmp_path):
    run = tmp_path / "run"
    done = python(
        ["-m", "pyro_vae", *TRAIN, "--out", str(run)],
        (EXAMPLE,),
        PYRO_VAE_PLUGINS="pyro_vae_mixture",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["plugins"]["model"].startswith(
        "pyro_vae_mixture"
    )


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error: "), err
    return err


@pytest.mark.parametrize(
    ("plugin", "words"),
    [
        ("{tmp}/missing.py", "the plugin file {tmp}/missing.py does not exist"),
        ("{tmp}/raises.py", "raises.py cannot be imported: RuntimeError: broken on purpose"),
        ("no_such_module_here", "'no_such_module_here' cannot be imported: ModuleNotFoundError"),
    ],
)
def test_a_broken_plugin_is_one_line_and_exit_2(tmp_path, capsys, plugin, words):
    (tmp_path / "raises.py").write_text('raise RuntimeError("broken on purpose")\n')
    plugin, words = plugin.format(tmp=tmp_path), words.format(tmp=tmp_path)
    assert main(["--plugin", plugin, "train", "--help"]) == 2
    assert words in one_line(capsys)
    assert main(["train", "--plugin", plugin, "--help"]) == 2  # after the command too
    assert words in one_line(capsys)


def test_a_broken_entry_point_is_one_line_naming_it(tmp_path):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyro_vae.models]\nbad = not_a_module:Model\n")
    done = python(["-m", "pyro_vae", "train", "--help"], (tmp_path,))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "entry point bad = not_a_module:Model (pyro_vae.models) cannot be imported" in (
        done.stderr
    )


def test_a_run_whose_plugin_is_gone_says_which_in_one_line(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["plugins"] = {"model": "/nowhere/mog.py"}
    config["model"]["kind"] = "mogvae"  # a kind no one here registered
    (run_copy / "config.json").write_text(json.dumps(config))
    assert main(["sample", "--run", str(run_copy)]) == 2
    err = one_line(capsys)
    assert "the run's model comes from /nowhere/mog.py, which cannot be imported" in err
    assert "pass --plugin with its module or file" in err


def test_the_guide_shows_the_example_packages_entry_points():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    shown = guide.split("```toml\n", 1)[1].split("```", 1)[0]
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert tomllib.loads(shown)["project"]["entry-points"] == declared["entry-points"]
