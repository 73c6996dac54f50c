import os

import pyro
import pytest
import torch

#: the suite runs in two worker processes (``-n 2`` in pyproject.toml); each keeps to
#: one torch thread, so that the two do not fight over the cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    """Every test starts from an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def toy_binary():
    """A small binary data set with structure a VAE can learn: two prototypes plus noise."""
    gen = torch.Generator().manual_seed(1)
    protos = (torch.rand(2, 16, generator=gen) > 0.5).float()
    labels = torch.arange(256) % 2
    flip = torch.rand(256, 16, generator=gen) < 0.05
    x = (protos[labels] + flip.float()) % 2
    return x[:192], x[192:]


#: the evaluator's warning (pyro_vae.errors.UnreliableWeights) that many points' importance
#: weights are heavy-tailed, which the tests' tiny models, trained for an epoch or two,
#: give; a command-line test that provokes it lets it through (``filterwarnings`` mark)
#: and checks the one line the command prints for it (:func:`check_unreliable_line`)
UNRELIABLE = (
    "always:the Pareto k-hat of the importance weights is above 0.7:"
    "pyro_vae.errors.UnreliableWeights"
)


def check_unreliable_line(err: str, report: dict) -> bool:
    """``pyro-vae evaluate`` printed its one-line k-hat warning exactly when the share of
    points above 0.7 in its report exceeds the evaluator's threshold; returns whether."""
    from pyro_vae.evaluate import KHAT_WARN_SHARE

    share = report["summary"]["khat"]["share_unreliable"]
    warned = [line for line in err.splitlines() if "the Pareto k-hat" in line]
    expected = share is not None and share > KHAT_WARN_SHARE
    assert len(warned) == int(expected), err
    if expected:
        n = report["num_points"]
        assert warned[0].startswith("pyro-vae: warning: the Pareto k-hat of the importance")
        assert f"above 0.7 for {share:.0%} of the {n} points" in warned[0]
    return expected


#: a VAE run on scikit-learn's digits that trains in seconds
FAST = ["--dataset", "digits", "--epochs", "2", "--hidden-dims", "32", "--z-dim", "2"]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A VAE run folder written by ``pyro-vae train``; read it, never write into it
    (use ``run_copy``), so that no test depends on another's order."""
    from pyro_vae.cli import main

    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["train", *FAST, "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def cvae_run(tmp_path_factory):
    """A CVAE run on the quadrants-2 task of the digits (X the left half, Y the right),
    with a learned prior."""
    from pyro_vae.cli import main

    out = tmp_path_factory.mktemp("cvae") / "run"
    args = ["train", *FAST, "--model", "cvae", "--task", "quadrants-2", "--prior", "learned"]
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(digits_run, tmp_path):
    """A private copy of ``digits_run`` that a test may write into."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    return copy


def pytest_collection_modifyitems(items):
    """Tests that read the one ``pyro-vae reproduce --quick`` run (about a minute)
    are slow, whichever way they reach it."""
    for item in items:
        if "quick_results" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
