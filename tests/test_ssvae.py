"""The semi-supervised VAE (M2) against independent computations: the enumerated ELBO
against a hand-written sum over the classes, in which a labelled image contributes the
conditional term of its label alone; log P(X) against quadrature over a one-dimensional
z; the balanced draw of the labelled images; and the command line."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyro_vae.models import SSVAE

C, D = 3, 6
#: importance samples against quadrature, and the tolerance: the untrained guide is a
#: poor proposal, and at K = 4,000 the estimates still erred by up to 0.04 nats
K_QUAD, QUAD_TOL = 200_000, 0.01


def _batch(n=5, labelled=(1, 3)):
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((n, D), 0.4), generator=g)
    classes = torch.randint(C, (n,), generator=g)
    known = torch.zeros(n, 1)
    known[list(labelled)] = 1.0
    return F.one_hot(classes, C).float() * known, known, x, classes


def _model(**kwargs):
    torch.manual_seed(0)
    return SSVAE(D, num_classes=C, z_dim=2, hidden_dims=(8,), **kwargs)


@pytest.mark.parametrize("training", [True, False])
def test_the_enumerated_elbo_is_the_hand_written_sum_over_the_classes(training):
    """-TraceEnum_ELBO's loss against, per image, sum_y q(y|x) [log p(y) + log p(z_y)
    + log p(x|y, z_y) - log q(z_y|x, y)] + H[q(y|x)] for a hidden label, and
    log p(y) + log p(z) + log p(x|y, z) - log q(z|x, y) (+ alpha log q(y|x) while
    training) at the label for a known one, on the z the guide drew for each class."""
    model = _model(alpha=3.0).train(training)
    y, known, x, classes = _batch()
    pyro.set_rng_seed(5)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, y, known, x)
    pyro.set_rng_seed(5)  # the same draws of z, one per class and image
    enumerated = poutine.enum(model.guide, first_available_dim=-2)
    z = poutine.trace(enumerated).get_trace(y, known, x).nodes["z"]["value"]  # (C, N, 2)
    with torch.no_grad():
        log_q_y = torch.log_softmax(model.classifier(x), -1)  # (N, C)
        per_class = []
        for k in range(C):
            one_hot = F.one_hot(torch.full((len(x),), k), C).float()
            loc, scale = model.recognition(torch.cat([x, one_hot], -1))
            logits = model.decoder(torch.cat([z[k], one_hot], -1))
            per_class.append(
                -math.log(C)
                + dist.Normal(0.0, 1.0).log_prob(z[k]).sum(-1)
                + dist.Bernoulli(logits=logits).log_prob(x).sum(-1)
                - dist.Normal(loc, scale).log_prob(z[k]).sum(-1)
            )
        per_class = torch.stack(per_class, -1)  # (N, C)
        hidden = (log_q_y.exp() * (per_class - log_q_y)).sum(-1)
        at_label = per_class.gather(-1, classes[:, None])[:, 0]
        if training:
            at_label = at_label + 3.0 * log_q_y.gather(-1, classes[:, None])[:, 0]
        expected = torch.where(known[:, 0] > 0, at_label, hidden).sum()
    assert -loss == pytest.approx(float(expected), abs=1e-4)


def test_log_px_sums_the_classes_and_integrates_z_as_quadrature_does():
    """z of one dimension: p(x) = sum_y p(y) integral N(z) p(x|y, z) dz on a fine grid,
    against the evaluator (z from sum_y Q(y|X) Q(z|X, y), the model's y enumerated)."""
    from pyro_vae.evaluate import log_likelihood

    torch.manual_seed(0)
    model = SSVAE(D, num_classes=C, z_dim=1, hidden_dims=(8,)).eval()
    _, _, x, classes = _batch(n=4)
    y = F.one_hot(classes, C).float()
    hidden = torch.zeros(len(x), 1)
    grid = torch.linspace(-9, 9, 20001, dtype=torch.float64)
    with torch.no_grad():
        per_class = []
        for k in range(C):
            one_hot = F.one_hot(torch.full((len(grid),), k), C).float()
            logits = model.decoder(torch.cat([grid[:, None].float(), one_hot], -1)).double()
            log_joint = dist.Bernoulli(logits=logits[:, None]).log_prob(x.double()).sum(-1)
            log_joint = log_joint + dist.Normal(0.0, 1.0).log_prob(grid)[:, None]  # (G, N)
            step = float(grid[1] - grid[0])
            per_class.append(torch.logsumexp(log_joint, 0) + math.log(step) - math.log(C))
        exact = torch.logsumexp(torch.stack(per_class), 0)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        estimate = log_likelihood(model.model, model.proposal, y, hidden, x, num_samples=K_QUAD)
    np.testing.assert_allclose(estimate.log_px.double(), exact, atol=QUAD_TOL)


def test_the_labelled_images_are_balanced_over_classes_and_seeded():
    classes = torch.arange(10).repeat(30)  # 30 images of each of 10 classes
    model = SSVAE(D, num_classes=10, z_dim=2, hidden_dims=(4,), labels=23, label_seed=4)
    chosen = model.labelled_indices(classes)
    counts = torch.bincount(classes[chosen], minlength=10)
    assert len(chosen) == 23 and len(set(chosen.tolist())) == 23
    assert sorted(counts.tolist()) == [2] * 7 + [3] * 3
    assert torch.equal(chosen, model.labelled_indices(classes))  # the seed decides
    other = SSVAE(D, num_classes=10, z_dim=2, hidden_dims=(4,), labels=23, label_seed=5)
    assert not torch.equal(chosen, other.labelled_indices(classes))


def test_the_training_data_hide_the_other_labels(tmp_path):
    from pyro_vae import data as data_mod

    dataset = data_mod.load("digits", binarize="dynamic")
    model = SSVAE(dataset.x_dim, num_classes=10, z_dim=2, hidden_dims=(4,), labels=30)
    (y, known, _), (y_test, known_test, _), _ = model.training_data(dataset)
    assert int(known.sum()) == 30 and int(y.sum()) == 30 and int(known_test.sum()) == 0
    shown = known[:, 0] > 0
    assert torch.equal(y[shown].argmax(-1), dataset.y_train[shown])
    assert torch.equal(y_test.argmax(-1), dataset.y_test)  # kept for the accuracy


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.UnreliableWeights")  # K = 20
def test_ssvae_trains_resumes_samples_and_evaluates(tmp_path):
    from pyro_vae.cli import main
    from pyro_vae.run import open_run

    run = tmp_path / "run"
    given = ["--model", "ssvae", "--dataset", "digits", "--labels", "40", "--z-dim", "3"]
    given += ["--hidden-dims", "32", "--no-progress"]
    assert main(["train", *given, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", *given, "--epochs", "2", "--resume", "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["diagnostics"]["accuracy"] <= 1 and results["diagnostics"]["labels"] == 40
    assert main(["sample", "--run", str(run), "-n", "20"]) == 0
    evaluate = ["evaluate", "--run", str(run), "--limit", "6", "--num-samples", "20"]
    assert main([*evaluate, "--no-progress"]) == 0
    summary = json.loads((run / "eval_n6.json").read_text())["summary"]
    assert summary["log_px"]["mean"] >= summary["elbo"]["mean"]
    model = open_run(run).model
    assert (model.labels, model.num_classes, model.sample_columns) == (40, 10, 10)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--labels", "0"], "expected an integer in [1, "),
        (["--labels", "5"], "--labels 5 must lie between 10 (one per class)"),
        (["--labels", "100000"], "and the 1438 training images"),
        (["--alpha", "-1"], "--alpha"),
        (["--guide", "iaf"], "choose --guide diagonal or full-covariance"),
        (["--objective", "iwae"], "cannot sum this model's discrete latent sites out"),
        (["--task", "label"], "--task"),
    ],
)
def test_bad_ssvae_options_are_one_line_before_anything_is_written(
    options, words, tmp_path, capsys
):
    from pyro_vae.cli import main

    base = ["train", "--model", "ssvae", "--dataset", "digits", "--epochs", "1"]
    try:
        status = main([*base, *options, "--out", str(tmp_path / "r")])
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "r").exists()


def test_data_without_labels_is_refused(tmp_path, capsys):
    from pyro_vae.cli import main

    images = torch.rand(30, 16).numpy()
    np.savez(tmp_path / "d.npz", x_train=images[:20], x_test=images[20:])
    argv = ["train", "--model", "ssvae", "--dataset", f"npz:{tmp_path / 'd.npz'}"]
    assert main([*argv, "--labels", "10", "--out", str(tmp_path / "r")]) == 2
    assert "needs the classes of the training images" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
