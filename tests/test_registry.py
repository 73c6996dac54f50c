"""A user's own models and likelihoods: registering a class again replaces it (a re-run
notebook cell), another class under a taken name is refused, an option that a run could
not read back is refused at registration; and commands run from Python raise."""

import pytest
from conftest import FAST
from pyro.distributions import constraints

import pyro_vae
from pyro_vae import VAE, CommandFailed, TrainingDiverged, UsageError, run_command
from pyro_vae.cli import main
from pyro_vae.cli import sample as sample_command
from pyro_vae.likelihoods import (
    LIKELIHOODS,
    Gaussian,
    Likelihood,
    get_likelihood,
    register_likelihood,
)
from pyro_vae.models import MODELS, Option, register
from pyro_vae.parsing import size


@pytest.fixture(autouse=True)
def registries():
    """Every registration a test makes is undone after it."""
    models, likelihoods = dict(MODELS), dict(LIKELIHOODS)
    yield
    MODELS.clear()
    MODELS.update(models)
    LIKELIHOODS.clear()
    LIKELIHOODS.update(likelihoods)


def run_cell(source: str) -> dict:
    """Run ``source`` as a notebook runs a cell: in a module named ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


MODEL_CELL = """
from pyro_vae.models import VAE, Option, register
from pyro_vae.parsing import size

@register
class MoGVAE(VAE):
    kind = "mogvae"
    options = (*VAE.options, Option("--modes", "mixture components", default=10, type=int))

    def __init__(self, x_dim, modes=10, **kwargs):
        super().__init__(x_dim, **kwargs)
        self.modes = modes
"""


# -- models -------------------------------------------------------------------------------


def test_running_a_cell_again_replaces_its_model():
    first = run_cell(MODEL_CELL)["MoGVAE"]
    assert register(first) is first and MODELS["mogvae"] is first  # the same class again
    second = run_cell(MODEL_CELL)["MoGVAE"]  # a new class object of the same name
    assert second is not first
    assert MODELS["mogvae"] is second
    assert list(MODELS).count("mogvae") == 1
    # the cell edited: its option parses otherwise, which no other kind's declaration
    # contradicts (only the entry it replaces)
    edited = run_cell(MODEL_CELL.replace("type=int", "type=size"))["MoGVAE"]
    assert MODELS["mogvae"] is edited and edited.options[-1].type is size


def test_another_class_under_a_taken_kind_is_refused_naming_both():
    mine = run_cell(MODEL_CELL)["MoGVAE"]

    class MoGVAE(VAE):  # the same name, defined elsewhere (here: this test module)
        kind = "mogvae"

    message = (
        "kind 'mogvae' already belongs to MoGVAE (module __main__); cannot register "
        "test_another_class_under_a_taken_kind_is_refused_naming_both.<locals>.MoGVAE "
        "(module test_registry) under it: give it a kind of its own"
    )
    with pytest.raises(UsageError) as refused:
        register(MoGVAE)
    assert str(refused.value) == message
    assert MODELS["mogvae"] is mine


def test_a_builtin_kind_is_not_replaced_by_a_users_class():
    builtin = MODELS["vae"]
    cell = "from pyro_vae.models import Model\nclass VAE(Model):\n    kind = 'vae'\n"
    with pytest.raises(UsageError, match=r"kind 'vae' already belongs to VAE \(module "):
        register(run_cell(cell)["VAE"])

    class Tuned(VAE):
        kind = "vae"

    with pytest.raises(UsageError, match=r"belongs to VAE \(module pyro_vae\.models\.vae\)"):
        register(Tuned)
    assert MODELS["vae"] is builtin


def test_every_builtin_model_registers_again_as_itself():
    before = dict(MODELS)
    for cls in before.values():  # their options name constructor arguments, or say how
        assert register(cls) is cls  # to read the value back
    assert MODELS == before


class Mixture(VAE):
    """A model whose constructor argument ``num_components`` does not match its flag."""

    kind = "mixture"

    def __init__(self, x_dim, num_components=10, **kwargs):
        super().__init__(x_dim, **kwargs)
        self.num_components = num_components


def test_an_option_that_a_run_could_not_read_back_is_refused_at_registration():
    components = Option("--components", "mixture components", default=10, type=size)
    Mixture.options = (*VAE.options, components)
    try:
        with pytest.raises(UsageError) as refused:
            register(Mixture)
        message = str(refused.value)
        assert message.startswith(
            "Mixture declares --components, but its name 'components' is no argument of "
            "Mixture.__init__ (x_dim, num_components, z_dim, "
        )
        assert "name the flag after the constructor argument that takes the value" in message
        assert 'pass argument="..." to Option' in message and "stored=" in message
        assert "\n" not in message and "mixture" not in MODELS

        wrong = Option("--components", "mixture components", type=size, argument="count")
        Mixture.options = (wrong,)
        with pytest.raises(UsageError, match=r"argument='count' is no argument of Mixture"):
            register(Mixture)

        # either way out works, and --resume then compares with the run's own value
        stored = Mixture(4, num_components=5).config()
        for fixed in (
            Option("--components", "mixture components", type=size, argument="num_components"),
            Option("--components", "components", stored=lambda c: c["num_components"]),
        ):
            Mixture.options = (*VAE.options, fixed)
            assert register(Mixture) is Mixture
            assert fixed.value_in(stored) == 5
    finally:
        del Mixture.options


# -- likelihoods --------------------------------------------------------------------------

LIKELIHOOD_CELL = """
import pyro.distributions as dist
from pyro.distributions import constraints
from pyro_vae.likelihoods import Likelihood, register_likelihood

@register_likelihood
class StudentT(Likelihood):
    name = "student-t"
    support = constraints.real

    def forward(self, out):
        return dist.StudentT(3.0, out, 0.1).to_event(1)
"""


def test_the_likelihood_registry_replaces_a_class_defined_again_and_refuses_another():
    assert pyro_vae.register_likelihood is register_likelihood
    first = run_cell(LIKELIHOOD_CELL)["StudentT"]
    assert register_likelihood(first) is first and LIKELIHOODS["student-t"] is first
    second = run_cell(LIKELIHOOD_CELL)["StudentT"]
    assert LIKELIHOODS["student-t"] is second and second is not first
    assert type(get_likelihood("student-t")) is second
    # a model with it stores its name, and its stored configuration finds it again
    config = VAE(4, likelihood=second()).config()
    assert config["likelihood"] == {"name": "student-t"}
    assert type(VAE.from_config(config).likelihood) is second

    class StudentT(Likelihood):
        name = "student-t"
        support = constraints.real

    with pytest.raises(UsageError) as refused:
        register_likelihood(StudentT)
    assert str(refused.value) == (
        "likelihood name 'student-t' already belongs to StudentT (module __main__); cannot "
        "register test_the_likelihood_registry_replaces_a_class_defined_again_and_refuses_"
        "another.<locals>.StudentT (module test_registry) under it: give it a name of its own"
    )
    assert LIKELIHOODS["student-t"] is second


def test_the_likelihood_registry_protects_the_builtin_names_and_wants_a_name():
    class Narrow(Gaussian):
        name = "gaussian"

    with pytest.raises(
        UsageError, match=r"'gaussian' already belongs to Gaussian \(module pyro_vae\.like"
    ):
        register_likelihood(Narrow)
    assert LIKELIHOODS["gaussian"] is Gaussian

    class Unnamed(Gaussian):
        pass

    with pytest.raises(UsageError, match=r"sets no name of its own \(it inherits 'gaussian'"):
        register_likelihood(Unnamed)
    with pytest.raises(UsageError, match=r"is not a subclass of pyro_vae\.likelihoods\.Likelihood"):
        register_likelihood(VAE)
    for cls in dict(LIKELIHOODS).values():
        assert register_likelihood(cls) is cls


# -- commands from Python -----------------------------------------------------------------


def test_a_command_run_from_python_returns_on_success(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *FAST, "--epochs", "1", "--no-progress", "--out", str(out)]
    assert run_command(argv) is None
    assert (out / "checkpoint.pt").exists()
    assert f"pyro-vae: wrote {out}" in capsys.readouterr().out
    picture = tmp_path / "s.png"
    assert run_command(f"sample --run {out} -n 4 --out {picture}") is None  # a string
    assert picture.exists() and capsys.readouterr().out == f"pyro-vae: wrote {picture}\n"
    assert run_command(["--version"]) is None  # --help and --version print and return
    assert capsys.readouterr().out.startswith("pyro_vae ")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],  # refused by the parser
        ["train", "--dataset", "digits", "--nope"],
        ["train", "--dataset", "digits", "--sigma", "0.5"],  # refused by the library
        ["sample", "--run", "no-such-run"],
    ],
)
def test_a_command_run_from_python_raises_the_line_the_command_line_prints(
    argv, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as refused:
        run_command(argv)
    message = str(refused.value)
    assert capsys.readouterr() == ("", "")  # it prints nothing, no traceback, no line
    assert "\n" not in message and not message.startswith("pyro-vae")
    assert refused.value.__suppress_context__ or refused.value.__context__ is None
    try:  # the command line prints the same message, and exits with status 2
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2
    assert capsys.readouterr().err.rstrip("\n").endswith(f"error: {message}")


def test_an_error_names_the_flags_and_the_help(tmp_path):
    with pytest.raises(UsageError) as refused:
        run_command(["train", "--epochs", "0"])
    assert str(refused.value) == (
        "argument --epochs: expected an integer in [1, 1000000], got 0 (see pyro-vae train --help)"
    )
    with pytest.raises(UsageError, match=r"^--sigma sets the scale .* choose --likelihood"):
        run_command(["train", "--dataset", "digits", "--sigma", "0.5", "--out", str(tmp_path)])


def test_a_nonzero_status_without_an_error_and_a_divergence_are_raised(monkeypatch, capsys):
    monkeypatch.setattr(sample_command, "cmd_sample", lambda args: 1)
    with pytest.raises(CommandFailed, match="pyro-vae sample ended with exit status 1") as failed:
        run_command(["sample", "--run", "r"])
    assert failed.value.status == 1
    assert main(["sample", "--run", "r"]) == 1

    def diverge(args):
        raise TrainingDiverged("the loss of {run} became NaN", settings=("run",))

    monkeypatch.setattr(sample_command, "cmd_sample", diverge)
    with pytest.raises(TrainingDiverged, match=r"^the loss of --run became NaN$"):
        run_command(["sample", "--run", "r"])
    assert main(["sample", "--run", "r"]) == 1
    assert capsys.readouterr().err == "pyro-vae: the loss of --run became NaN\n"


def test_what_a_model_needs_is_exported_from_the_models_package():
    import pyro_vae.models as models
    from pyro_vae.models import options

    for name in ("architecture", "guide_family_from_options", "likelihood_from_options"):
        assert name in models.__all__ and getattr(models, name) is getattr(options, name)
        assert ":raises UsageError:" in getattr(models, name).__doc__
    assert "Option" in models.__all__


def test_a_constructor_argument_named_like_the_contract_is_refused_at_registration():
    class Mixture(VAE):
        kind = "mixture-clash"

        def __init__(self, x_dim, components=3, **rest):
            super().__init__(x_dim, **rest)
            self.components = components  # would replace Model.components, the factories

    with pytest.raises(UsageError) as refused:
        register(Mixture)
    assert str(refused.value) == (
        "Mixture's constructor takes components, the name of an attribute of the model "
        "contract (pyro_vae.models.Model); rename the argument (and its option)"
    )
    assert "mixture-clash" not in MODELS
