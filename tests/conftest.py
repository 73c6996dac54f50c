import pyro
import pytest
import torch


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
