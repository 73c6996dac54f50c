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
