"""The model contract: a model defined in one new file plus one registry line works
with every command, the config round trip is written once, the registry refuses what
it cannot serve, and Pyro's global param store neither leaks nor aliases models."""

import copy
import gc
import importlib.util
import json
import pickle
import re
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from conftest import UNRELIABLE, check_unreliable_line

from pyro_vae import CVAE, VAE, Bernoulli, Gaussian, Regressor, TrainConfig, fit
from pyro_vae.cli import main
from pyro_vae.errors import UsageError
from pyro_vae.models import HVAE, MODELS, Model, Option, model_class, register
from pyro_vae.parsing import size
from pyro_vae.run import open_run

#: probabilistic PCA, the shortest complete model: the class of the guide's example
PPCA_SOURCE = re.search(
    r"```python\n((?:(?!```).)*?)\nregister\(PPCA\)",  # inside one code block
    (Path(__file__).parents[1] / "docs" / "guide.md").read_text(),
    flags=re.S,
).group(1)


@pytest.fixture
def ppca_class(tmp_path):
    """``PPCA`` from a temporary module, registered for the test and removed after it."""
    path = tmp_path / "ppca_model.py"
    path.write_text(textwrap.dedent(PPCA_SOURCE))
    spec = importlib.util.spec_from_file_location("ppca_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register(module.PPCA)  # the one registry line
    yield module.PPCA
    MODELS.pop("ppca")


def exact_log_px(model, x: torch.Tensor) -> torch.Tensor:
    """log N(x; b, W W^T + sigma^2 I) per point: the marginal of probabilistic PCA."""
    w, b = model.decoder.weight, model.decoder.bias  # (x_dim, z_dim), (x_dim,)
    _, sigma = model.likelihood.loc_scale(b)
    cov = w @ w.T + sigma**2 * torch.eye(len(b))
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x)


@pytest.mark.slow
@pytest.mark.filterwarnings(UNRELIABLE)
def test_a_model_in_one_new_file_trains_samples_and_is_evaluated(ppca_class, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "ppca", "--dataset", "digits", "--z-dim", "3", "--epochs", "40"]
    assert main([*args, "--lr", "0.01", "--no-progress", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"kind": "ppca", "x_dim": 64, "z_dim": 3, "image_shape": [8, 8]}
    assert config["data"]["binarize"] == "none"  # a gaussian model keeps the grey levels
    assert main(["sample", "--run", str(run), "-n", "4"]) == 0
    from pictures import assert_axes_match

    from pyro_vae.plots import grid_figure
    from pyro_vae.run import load_model

    drawn = load_model(run).sample(4, generator=torch.Generator().manual_seed(0))
    figure = grid_figure(drawn, (8, 8), "4 samples from the prior (seed 0)")
    assert_axes_match(run / "prior_samples_4.png", figure, tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--num-samples", "2000", "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    # the mean-field guide of a trained PPCA misses the posterior's correlations: for
    # 13% of the test images the weights' k-hat is above 0.7, which the command reports
    assert check_unreliable_line(capsys.readouterr().err, report)
    model, dataset, _, _ = open_run(run)
    with torch.no_grad():
        exact = exact_log_px(model, dataset.x_test).double()
    estimate = torch.tensor(report["per_point"]["log_px"], dtype=torch.float64)
    # importance sampling converges to the exact marginal from below: the mean over the
    # 359 test images lies well inside the reported standard error over images (0.7
    # nats), and the typical image is within 0.05 nats (measured: 0.02; a few images
    # with a poor guide and ESS near 3 are off by up to 1 nat)
    diff = exact - estimate
    assert abs(float(diff.mean())) < report["summary"]["log_px"]["stderr"]
    assert float(diff.abs().median()) < 0.05
    # a resumed run of the new model continues where it stopped
    resume = ["train", "--out", str(run), "--resume", "--epochs", "41", "--no-progress"]
    assert main(resume) == 0
    assert json.loads((run / "history.json").read_text())["epoch"] == list(range(1, 42))


def test_the_config_round_trip_is_written_once_for_every_model():
    models = [
        VAE(16, z_dim=3, hidden_dims=(8, 4), likelihood=Gaussian(sigma="per-pixel")),
        CVAE(5, 7, z_dim=2, hidden_dims=(6,), prior="learned", task="label"),
        Regressor(5, 7, hidden_dims=(6,), task="quadrants-1"),
    ]
    for model in models:
        config = model.config()
        json.dumps(config)  # plain data
        clone = type(model).from_config(config)
        assert clone.config() == config and clone.name != model.name
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in clone.state_dict().items()} == shapes
    assert models[0].config()["likelihood"] == {
        "name": "gaussian",
        "sigma": "per-pixel",
        "min_sigma": 1e-3,
        "init_sigma": 0.1,
    }
    with pytest.raises(UsageError, match="settings this version of pyro_vae does not know"):
        VAE.from_config({"kind": "vae", "x_dim": 4, "flows": 2})


def test_a_constructor_argument_that_is_not_plain_data_is_named():
    class Odd(VAE):
        def __init__(self, x_dim, extra=None, name=None):
            super().__init__(x_dim, name=name)

    with pytest.raises(TypeError, match=r"Odd\(extra=...\): object is not plain data"):
        Odd(4, extra=object()).config()


def test_the_registry_refuses_what_it_cannot_serve():
    with pytest.raises(UsageError, match=r"not a subclass of pyro_vae\.models\.Model"):
        register(torch.nn.Linear)

    class NoKind(Model):
        pass

    with pytest.raises(UsageError, match="sets no kind"):
        register(NoKind)

    class Impostor(Model):
        kind = "vae"

    with pytest.raises(UsageError, match="kind 'vae' already belongs to VAE"):
        register(Impostor)
    with pytest.raises(UsageError, match="'flowvae' is not a registered model"):
        model_class("flowvae")


def test_capabilities_come_from_the_model_not_its_kind():
    vae, cvae, regressor = VAE(4), CVAE(2, 3), Regressor(2, 3)
    assert vae.supports("sample") and vae.supports("reconstruct")
    assert not vae.supports("completions") and not vae.supports("exact_log_likelihood")
    assert vae.supports("gap_decomposition") and vae.supports("latent")
    assert cvae.supports("completions") and not cvae.supports("sample")
    assert not cvae.supports("gap_decomposition")
    assert regressor.supports("exact_log_likelihood") and not regressor.supports("latent")
    assert HVAE.supports("sample") and not HVAE.supports("gap_decomposition")
    with pytest.raises(UsageError, match="this CVAE on task None cannot draw samples"):
        cvae.sample(3)
    with pytest.raises(ValueError, match="unknown capability 'fly'"):
        vae.supports("fly")


def test_training_many_models_in_one_process_keeps_only_the_live_ones(toy_binary):
    """An experiment trains model after model: the param store must not keep the
    parameters of every earlier model alive."""
    train, _ = toy_binary
    store = pyro.get_param_store()
    refs = []
    for seed in range(3):
        pyro.set_rng_seed(seed)
        vae = VAE(16, z_dim=2, hidden_dims=(8,))
        fit(vae, train, config=TrainConfig(epochs=1, batch_size=64, engine="svi"), progress=False)
        assert {k.split("_")[0] for k in store.keys()} == {vae.name}
        refs.append(weakref.ref(next(vae.parameters())))
        del vae
        gc.collect()
    assert len(store.keys()) == 0
    assert all(ref() is None for ref in refs)  # the tensors themselves are freed


def test_two_models_never_share_parameters_by_default(toy_binary):
    x, _ = toy_binary
    a, b = VAE(16, z_dim=2, hidden_dims=(8,)), VAE(16, z_dim=2, hidden_dims=(8,))
    assert a.name != b.name
    for model in (a, b):
        pyro.infer.SVI(
            model.model, model.guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
        ).step(x)
    names = {k.split("$$$")[0] for k in pyro.get_param_store().keys()}
    assert names == {
        f"{a.name}_encoder",
        f"{a.name}_decoder",
        f"{b.name}_encoder",
        f"{b.name}_decoder",
    }
    assert not np.allclose(a.decoder[0].weight.detach(), b.decoder[0].weight.detach())


def test_keyword_arguments_passed_through_round_trip():
    class Scaled(VAE):
        def __init__(self, x_dim, *, fixed_scale, **kwargs):
            super().__init__(x_dim, **kwargs)
            self.fixed_scale = fixed_scale

    model = Scaled(6, fixed_scale=0.1, z_dim=3, hidden_dims=(4,))
    config = model.config()
    assert config["fixed_scale"] == 0.1 and config["z_dim"] == 3
    assert Scaled.from_config(config).config() == config

    class Positional(VAE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    with pytest.raises(TypeError, match=r"through \*args have no names"):
        Positional(6, 3)


def test_a_copied_or_unpickled_model_claims_a_name_of_its_own(toy_binary):
    x, _ = toy_binary
    original = VAE(16, z_dim=2, hidden_dims=(8,), name="mine")
    pickled = pickle.dumps(original)  # before Pyro tags its parameters with weak references
    with pytest.raises(UsageError, match="another live model is named 'mine'"):
        VAE(16, z_dim=2, hidden_dims=(8,), name="mine")
    assert pickle.loads(pickled).name not in ("mine", "")  # taken: a fresh one
    twin = copy.deepcopy(original)
    assert twin.name not in ("mine", "") and twin.config() == original.config()
    torch.testing.assert_close(twin.decoder[0].weight, original.decoder[0].weight)
    for model in (original, twin):
        pyro.infer.SVI(
            model.model, model.guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
        ).step(x)
    # each trained its own parameters: one step from equal weights on the same data
    # with independent z samples moves them apart
    assert not torch.equal(twin.decoder[0].weight, original.decoder[0].weight)
    names = {k.split("_")[0] for k in pyro.get_param_store().keys()}
    assert names == {"mine", twin.name}
    del twin, model
    gc.collect()
    assert {k.split("_")[0] for k in pyro.get_param_store().keys()} == {"mine"}
    # unpickled where the name is free, a model keeps it
    del original
    gc.collect()
    assert pickle.loads(pickled).name == "mine"


class _Observed(Model):
    """The least a model must write: its model, guide, data widths and builder."""

    kind = "observed"

    @property
    def data_dims(self):
        return (3,)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.likelihood(torch.zeros_like(x)), obs=x)

    def guide(self, x):
        pass

    @classmethod
    def from_options(cls, options, dataset):
        return cls()


def test_the_required_members_are_abstract_and_the_likelihood_is_checked():
    class Partial(Model):
        kind = "partial"

        def model(self, x):
            pass

    with pytest.raises(TypeError, match=r"abstract.*data_dims, from_options, guide"):
        Partial()

    class Unobserved(_Observed):
        def __init__(self, name=None):
            super().__init__(name)

    with pytest.raises(TypeError, match=r"Unobserved\.__init__ sets no likelihood"):
        Unobserved()

    class Observed(_Observed):
        def __init__(self, name=None):
            super().__init__(name)
            self.likelihood = Bernoulli()

    assert Observed().supports("latent")  # what it declares: latent_sites = ("z",)
    assert not Observed().supports("sample")


def test_a_model_without_a_constructor_and_numpy_settings_round_trip():
    class Constant(_Observed):
        kind = "constant"

    assert Constant().config() == {"kind": "constant"}
    assert isinstance(Constant.from_config({"kind": "constant"}), Constant)

    class Tuned(VAE):
        def __init__(self, x_dim, rate=0.5, flag=False, steps=1, name=None):
            super().__init__(x_dim, name=name)

    config = Tuned(4, rate=np.float32(0.25), flag=np.bool_(True), steps=np.int64(3)).config()
    assert json.loads(json.dumps(config)) == {
        "kind": "vae",
        "x_dim": 4,
        "rate": 0.25,
        "flag": True,
        "steps": 3,
    }


def test_registering_names_the_inherited_kind_and_clashing_flags():
    class Deeper(VAE):
        pass

    with pytest.raises(UsageError, match=r"sets no kind of its own \(it inherits 'vae'"):
        register(Deeper)

    class Clash(VAE):
        kind = "clash"
        options = (Option("--z-dim", "latent dimension", default=2.5, type=float),)

    with pytest.raises(UsageError, match="declares --z-dim with another type"):
        register(Clash)
    assert "clash" not in MODELS


def test_models_may_share_a_flag_with_their_own_default(capsys):
    class Big(VAE):
        kind = "big"
        options = (Option("--z-dim", "width of z", default=100, type=size),)  # Z_DIM's type

    register(Big)
    try:
        with pytest.raises(SystemExit):
            main(["train", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "latent dimension (default 20; 100 for big)" in text
        assert (
            "P(x|z), or P(Y|z,X) (default bernoulli; gaussian for vqvae) "
            "[vae, cvae, regressor, hvae, vqvae, ssvae]" in text
        )
        assert "hidden widths of every network (default 400; 200,100 for hvae)" in text
    finally:
        MODELS.pop("big")


def test_conditional_options_reach_a_subclass_through_its_keyword_arguments():
    from pyro_vae.data import load

    class Wide(CVAE):
        kind = "wide"
        options = (*CVAE.options, Option("--extra", "unused width", default=3, type=int))

        def __init__(self, x_dim, y_dim, *, extra=3, **kwargs):
            super().__init__(x_dim, y_dim, **kwargs)
            self.extra = extra

    options = {"task": "label", "prior": "learned", "z_dim": 5, "hidden_dims": [7]}
    options |= {"likelihood": "bernoulli", "sigma": None, "extra": 4}
    model = Wide.from_options(options, load("digits"))
    config = model.config()
    assert (config["extra"], config["z_dim"], config["prior"]) == (4, 5, "learned")
    assert config["hidden_dims"] == [7] and model.task == "label"


def test_completions_draw_from_their_seed_and_leave_the_global_generator_alone():
    from pyro_vae.data import load

    dataset = load("digits", binarize="static")
    cvae = CVAE(32, 32, z_dim=2, hidden_dims=(8,), task="quadrants-2").eval()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    drawn = cvae.completions(dataset, "test", 3, 2, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    again = cvae.completions(dataset, "test", 3, 2, seed=7)
    other = cvae.completions(dataset, "test", 3, 2, seed=8)
    assert [label for label, _ in drawn.rows] == ["ground truth", "completion 1", "completion 2"]
    assert drawn.num_samples == 2 and drawn.x.shape == (3, 32)
    for (_, a), (_, b), (_, c) in zip(drawn.rows[1:], again.rows[1:], other.rows[1:], strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)
    # the regressor's one deterministic mean: no sample count
    regressor = Regressor(10, 64, hidden_dims=(8,), task="label").eval()
    assert regressor.completions(dataset, "test", 3, 5, seed=0).num_samples is None
