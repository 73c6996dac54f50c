import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import VAE, Gaussian
from pyro_vae.errors import UsageError


def test_model_and_guide_sites_and_shapes():
    vae = VAE(16, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((5, 16), 0.5))
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    guide_sites = {n: s for n, s in guide_tr.nodes.items() if s["type"] == "sample"}
    model_sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample"}
    assert list(guide_sites) == ["data", "z"]
    assert list(model_sites) == ["data", "z", "x"]
    assert guide_sites["z"]["value"].shape == (5, 3)
    assert guide_sites["z"]["fn"].event_shape == (3,)
    assert model_sites["x"]["is_observed"] and model_sites["x"]["fn"].event_shape == (16,)
    assert model_sites["x"]["fn"].batch_shape == (5,)
    for site in (guide_sites["z"], model_sites["z"], model_sites["x"]):
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        assert site["cond_indep_stack"][0].dim == -1


def test_vectorized_particles_broadcast_over_data():
    vae = VAE(16, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((5, 16), 0.5))
    elbo = Trace_ELBO(num_particles=7, vectorize_particles=True, max_plate_nesting=1)
    model_tr, guide_tr = next(elbo._get_traces(vae.model, vae.guide, (x,), {}))
    assert guide_tr.nodes["z"]["value"].shape == (7, 5, 3)
    assert model_tr.nodes["x"]["fn"].batch_shape == (7, 5)


def test_reconstruct_and_sample_shapes_and_ranges():
    vae = VAE(16, z_dim=3, hidden_dims=(8,))
    x = torch.rand(4, 16).round()
    assert vae.reconstruct(x).shape == (4, 16)
    s = vae.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.shape == (6, 16) and 0 <= s.min() and s.max() <= 1
    again = vae.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)
    assert VAE(16, likelihood=Gaussian(0.1)).sample(2).shape == (2, 16)


def test_config_round_trip_rebuilds_the_architecture():
    vae = VAE(16, z_dim=3, hidden_dims=(8, 5), likelihood=Gaussian(0.2), image_shape=(4, 4))
    clone = VAE.from_config(vae.config())
    assert clone.config() == vae.config()
    assert [p.shape for p in clone.parameters()] == [p.shape for p in vae.parameters()]


def test_second_instance_trains_under_svi(toy_binary):
    """Instances register under distinct names, so SVI updates the second one's own weights."""
    x, _ = toy_binary
    first, second = VAE(16, z_dim=2, hidden_dims=(8,)), VAE(16, z_dim=2, hidden_dims=(8,))
    assert first.name != second.name
    svi = SVI(first.model, first.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(x)
    before = [p.detach().clone() for p in second.parameters()]
    svi2 = SVI(second.model, second.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi2.step(x)
    changed = [not torch.equal(b, p) for b, p in zip(before, second.parameters(), strict=True)]
    assert all(changed)


def test_a_shared_name_fails_loudly_instead_of_freezing_the_second_model(toy_binary):
    """The Pyro trap: under one name in the param store, the second module's parameters
    are replaced by the first one's and never train. A second live model with a taken
    name is refused; once the first is gone, the name is free again."""
    first = VAE(16, z_dim=2, hidden_dims=(8,), name="same")
    with pytest.raises(UsageError, match="another live model is named 'same'"):
        VAE(16, z_dim=2, hidden_dims=(8,), name="same")
    x, _ = toy_binary
    SVI(first.model, first.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)
    del first
    second = VAE(16, z_dim=2, hidden_dims=(8,), name="same")
    before = [p.detach().clone() for p in second.parameters()]
    SVI(second.model, second.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)
    # every parameter moved: the second model trains its own parameters
    assert not any(torch.equal(b, p) for b, p in zip(before, second.parameters(), strict=True))


def test_check_data_names_shape_and_support():
    vae = VAE(16)
    with pytest.raises(UsageError, match=r"expects \(N, 16\)"):
        vae.check_data(torch.zeros(3, 15))
    with pytest.raises(UsageError, match="bernoulli likelihood needs binary data"):
        vae.check_data(torch.full((3, 16), 0.5), what="the training split")
