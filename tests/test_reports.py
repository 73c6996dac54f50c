"""Results and reports without argparse: the ordering check on hand-made estimates, the
tables' wording from the model contract, and bits per dimension of a model's target."""

import math

import pytest
import torch

from pyro_vae import CVAE, VAE, Regressor, load, reports
from pyro_vae.evaluate import DatasetEvaluation
from pyro_vae.units import comparable_bits_per_dim


def evaluation(elbo, l5, log_px, num_samples=10):
    """A hand-made evaluation of len(elbo) points with ks (1, 5)."""
    elbo, l5, log_px = (torch.tensor(v, dtype=torch.float64) for v in (elbo, l5, log_px))
    return DatasetEvaluation(
        ks=(1, 5),
        bounds=torch.stack([elbo, l5]),
        log_px=log_px,
        elbo=elbo,
        ess=torch.ones_like(elbo),
        num_samples=num_samples,
        proposal="guide",
    )


def test_order_violations_name_the_pair_that_steps_down():
    good = evaluation([-10.0, -20.0], [-9.0, -19.5], [-8.0, -19.0])
    assert reports.order_violations(good) == []
    bad = evaluation([-10.0, -20.0], [-9.0, -21.0], [-8.0, -19.0])  # L_5 < ELBO at point 1
    (message,) = reports.order_violations(bad)
    assert message.startswith("L_5 is below elbo by 1 nats for some point")
    # L_5 above log P(X) steps down too; noise below the tolerance does not count
    worse = evaluation([-10.0], [-7.0], [-8.0])
    assert reports.order_violations(worse) == [
        "log_px is below L_5 by 1 nats for some point, which nested groups of shared "
        "samples rule out: a bug in the estimator"
    ]
    assert reports.order_violations(evaluation([-10.0], [-10.0 - 1e-6], [-9.0])) == []
    # K = 10 is no multiple of k = 3: those groups do not nest, so nothing is checked
    odd = DatasetEvaluation(
        (1, 3),
        torch.tensor([[-1.0], [-5.0]]),
        torch.tensor([-0.5]),
        torch.tensor([-1.0]),
        torch.ones(1),
        10,
        "guide",
    )
    assert reports.order_violations(odd) == []


def test_bits_per_dimension_count_the_target_only():
    data = load("digits", binarize="static")
    log_p = -20.0
    for model, dims in ((VAE(64), 64), (CVAE(8, 56), 56), (Regressor(8, 56), 56)):
        assert comparable_bits_per_dim(model, data, log_p) == pytest.approx(
            20.0 / (dims * math.log(2))
        )


def _results(model, exact):
    return {
        "model": model.kind,
        "description": model.describe(),
        "target": model.notation.data,
        "exact": exact,
        "dataset": "digits",
        "binarize": "static",
        "dequantized": False,
        "likelihood": {"name": "bernoulli"},
        "split": {"train": 10, "test": 5},
        "epochs": 3,
        "seed": 0,
        "elbo_particles": 10,
        "train_elbo": -30.0,
        "test_elbo": -31.5,
        "test_elbo_bits_per_dim": 0.5,
    }


def test_training_tables_word_each_model_from_its_contract():
    vae = reports.training_table(_results(VAE(4), exact=False))
    assert "VAE, ELBO from 10 samples of z per data point" in vae
    assert "| split | ELBO of log P(X) (nats per data point) |" in vae
    assert "| test | -31.50 |" in vae and "(an upper bound): 0.5000" in vae
    regressor = Regressor(2, 3, task="label")
    exact = reports.training_table(_results(regressor, exact=True))
    assert "regressor on task label: no latent variable, so the ELBO is the exact" in exact
    assert "| split | log P(Y\\|X), exact (nats per data point) |" in exact
    assert "log-likelihood as bits per dimension (exact)" in exact
    for line in (vae + exact).splitlines():  # every row has exactly two cells
        if line.startswith("| "):
            assert line.replace("\\|", "").count("|") == 3, line


def test_training_results_leave_the_global_generator_as_they_found_it():
    from pyro_vae.evaluate import mean_elbo
    from pyro_vae.train import History, TrainConfig

    dataset = load("digits", binarize="static")
    model = VAE(64, z_dim=2, hidden_dims=(8,))
    config = TrainConfig(seed=3, eval_batch_size=16)
    history = History(epoch=[1], seconds=[0.5])
    data = {"train": (dataset.x_train[:40],), "test": (dataset.x_test[:20],)}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = reports.training_results(model, dataset, config, history, data)
    assert torch.equal(torch.get_rng_state(), before)
    # the ELBOs are drawn from the generator seeded with the run's seed, as they always
    # were, so they do not depend on the caller's random state
    torch.manual_seed(3)
    expected = {
        split: mean_elbo(
            model.model,
            model.guide,
            tensors,
            num_particles=reports.FINAL_ELBO_PARTICLES,
            batch_size=16,
            max_plate_nesting=model.max_plate_nesting,
        )
        for split, tensors in data.items()
    }
    torch.manual_seed(456)
    again = reports.training_results(model, dataset, config, history, data)
    for r in (first, again):
        assert (r["train_elbo"], r["test_elbo"]) == (expected["train"], expected["test"])
