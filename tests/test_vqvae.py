"""The VQ-VAE of the notes: code selection, the straight-through gradient, its ELBO, its
exact log P(X) by enumeration and the importance-sampled one, and the command line."""

import itertools
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae import Bernoulli
from pyro_vae.cli import main
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.models import VQVAE
from pyro_vae.models.codebook import Codebook, Quantizer


def tiny(**kw) -> VQVAE:
    pyro.set_rng_seed(0)
    settings = dict(codes=5, slots=1, code_dim=3, hidden_dims=(8,), likelihood=Bernoulli())
    model = VQVAE(6, **{**settings, **kw})
    with torch.no_grad():  # codes of unit scale, so that choices and likelihoods differ
        model.quantizer.codebook.normal_()
    return model


X = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0.0]])


def log_px_given_code(model, x, codes):
    """``log p(x | V[codes])`` by hand: ``codes`` (m,) indices, ``x`` (N, x_dim)."""
    z = model.quantizer.codebook[torch.as_tensor(codes)].flatten()
    logits = model.decoder(z)
    return (x * logits - torch.nn.functional.softplus(logits)).sum(-1)


def watch_encoder_output_and_decoder_input(model) -> dict:
    """``{"e": encoder output, "z": decoder input}`` of the next pass, gradients kept."""
    seen = {}

    def keep(name, tensor):
        tensor.retain_grad()
        seen[name] = tensor

    model.encoder.register_forward_hook(lambda module, inputs, out: keep("e", out))
    model.decoder.register_forward_pre_hook(lambda module, inputs: keep("z", inputs[0]))
    return seen


@pytest.mark.parametrize(("rule", "expected"), [("dot", 2), ("distance", 0)])
def test_selection_rules_on_hand_made_vectors(rule, expected):
    q = Quantizer(3, 2, select=rule)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]))
    # e = (0.9, 0.1): dot products 0.9, 0.1, 3.6, so the long code wins by dot product;
    # squared distances 0.02, 1.62, 12.82, so the first code is the nearest.
    # e = (-1, 2): dot products -1, 2, 3; squared distances 8, 2, 17
    e = torch.tensor([[[0.9, 0.1]], [[-1.0, 2.0]]])
    chosen = q.select(e)
    assert chosen[0, 0] == expected
    assert chosen[1, 0] == (1 if rule == "distance" else 2)
    scores = q.scores(e)
    if rule == "distance":  # negative squared distances
        torch.testing.assert_close(scores[0, 0], -torch.tensor([0.02, 1.62, 12.82]))
    else:
        torch.testing.assert_close(scores[1, 0], torch.tensor([-1.0, 2.0, 3.0]))


def test_straight_through_gradient_is_the_decoder_input_gradient():
    model = tiny().eval()  # evaluation: no codebook or commitment terms in the loss
    seen = watch_encoder_output_and_decoder_input(model)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, X)
    loss.backward()
    grad_e, grad_z = seen["e"].grad, seen["z"].grad
    assert grad_e.abs().sum() > 0
    torch.testing.assert_close(grad_e, grad_z)
    # the codebook gets no gradient from the ELBO itself: the choice blocks it
    assert model.quantizer.codebook.grad is None or model.quantizer.codebook.grad.abs().sum() == 0


def test_elbo_is_reconstruction_minus_m_log_k():
    for slots in (1, 2):
        model = tiny(slots=slots).eval()
        e = model.encoder(X).reshape(3, slots, 3)
        codes = (e @ model.quantizer.codebook.T).argmax(-1)  # largest dot product
        recon = torch.stack([log_px_given_code(model, X[i : i + 1], codes[i])[0] for i in range(3)])
        expected = recon - slots * math.log(5)
        loss = Trace_ELBO().loss(model.model, model.guide, X)
        assert float(loss) == pytest.approx(-float(expected.detach().sum()), rel=1e-5)
        torch.testing.assert_close(model.elbo(X), expected.detach())


def test_training_loss_adds_the_codebook_and_commitment_terms():
    model = tiny(commitment=0.5, codebook_weight=2.0)
    with torch.no_grad():
        e = model.encoder(X).reshape(3, 1, 3)
        idx = (e @ model.quantizer.codebook.T).argmax(-1)[:, 0]
        v = model.quantizer.codebook[idx].unsqueeze(1)
        squared = (e - v).pow(2).sum((-2, -1))
        elbo = model.elbo(X)
    loss = Trace_ELBO().loss(model.model, model.guide, X)  # training mode
    assert loss == pytest.approx(float(-elbo.sum() + 2.5 * squared.sum()), rel=1e-5)

    # the gradients: the codebook term moves the chosen codes towards the outputs
    # (d/dV_j = 2 w sum over the points that chose j of (V_j - e_i)), and the encoder
    # output gets the commitment term's 2 beta (e - V) on top of the copied decoder-input
    # gradient
    seen = watch_encoder_output_and_decoder_input(model)
    Trace_ELBO().differentiable_loss(model.model, model.guide, X).backward()
    expected = torch.zeros(5, 3)
    for i, j in enumerate(idx.tolist()):
        expected[j] += 2 * 2.0 * (v[i, 0] - e[i, 0])
    torch.testing.assert_close(model.quantizer.codebook.grad, expected)
    commitment = seen["e"].grad - seen["z"].grad
    torch.testing.assert_close(commitment, (2 * 0.5 * (e - v)).reshape(3, 3))


def test_exact_log_likelihood_is_the_brute_force_sum():
    for slots in (1, 2):
        model = tiny(slots=slots).eval()
        with torch.no_grad():
            terms = torch.stack(
                [
                    log_px_given_code(model, X, combo)
                    for combo in itertools.product(range(5), repeat=slots)
                ]
            )  # (5^m, N)
            brute = terms.logsumexp(0) - slots * math.log(5)
        exact = model.exact_log_likelihood(X, chunk_size=2)
        torch.testing.assert_close(exact, brute)
        # and Pyro's TraceEnum_ELBO with an empty guide sums the same site out
        enumerated = pyro.infer.config_enumerate(model.model, default="parallel")
        loss = TraceEnum_ELBO(max_plate_nesting=1).loss(enumerated, lambda x: None, X)
        assert loss == pytest.approx(-float(brute.sum()), rel=1e-5)


def test_importance_sampled_log_likelihood_agrees_with_the_exact_sum():
    model = tiny(slots=2).eval()
    exact = model.exact_log_likelihood(X)
    k = 2000
    ev = evaluate_dataset(model.model, model.proposal, X, num_samples=k, ks=(1,), seed=0)
    # delta method: the variance of log(mean w) is about (K / ESS - 1) / K
    stderr = ((k / ev.ess - 1) / k).sqrt()
    assert (ev.ess < k).all()  # the proposal is not the posterior
    assert ((ev.log_px - exact).abs() < 4 * stderr + 1e-4).all(), (ev.log_px, exact, stderr)
    # the one-hot guide makes every weight equal: its estimate is the ELBO, below log P(X)
    onehot = evaluate_dataset(model.model, model.guide, X, num_samples=10, ks=(1,), seed=0)
    torch.testing.assert_close(onehot.log_px, model.elbo(X))
    assert (onehot.log_px < exact).all()


def test_codebook_distribution():
    codebook = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    prior = Codebook(codebook, torch.zeros(2, 3)).expand((4,))
    assert prior.batch_shape == (4,) and prior.event_shape == (2, 2)
    support = prior.enumerate_support(expand=False)
    assert support.shape == (9, 1, 2, 2)
    torch.testing.assert_close(prior.log_prob(support), torch.full((9, 4), -2 * math.log(3)))
    logits = torch.tensor([[0.0, math.log(2), math.log(5)]])  # one slot: 1/8, 2/8, 5/8
    one_slot = Codebook(codebook, logits)
    torch.testing.assert_close(
        one_slot.log_prob(codebook.unsqueeze(1)), torch.tensor([1 / 8, 2 / 8, 5 / 8]).log()
    )
    draws = Codebook(codebook, logits).sample((4000,))
    frequency = (draws[:, 0, 0] == 1.0).double().mean()  # the third code
    assert abs(frequency - 5 / 8) < 4 * math.sqrt(5 / 8 * 3 / 8 / 4000)
    strict = Codebook(codebook, logits, validate_args=True)
    with pytest.raises(ValueError, match="away from every codebook row"):
        strict.log_prob(torch.tensor([[0.5, 0.5]]))


def test_moving_average_update_by_hand():
    q = Quantizer(2, 1, select="distance", ema_decay=0.5)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0], [10.0]]))
        q.ema_sums.copy_(q.codebook)
    e = torch.tensor([[[1.0]], [[3.0]], [[9.0]]])
    q.ema_update(e, q.select(e))  # codes 0, 0, 1
    # counts 0.5 * 1 + 0.5 * (2, 1) = (1.5, 1.0); sums 0.5 * (0, 10) + 0.5 * (4, 9)
    counts, sums = torch.tensor([1.5, 1.0]), torch.tensor([2.0, 9.5])
    smoothed = (counts + 1e-5) / (2.5 + 2e-5) * 2.5
    torch.testing.assert_close(q.codebook[:, 0], sums / smoothed)


def test_exact_log_likelihood_refuses_too_many_code_arrays():
    from pyro_vae.errors import UsageError

    model = tiny(codes=17, slots=3)  # 4,913 > 4,096 arrays
    with pytest.raises(UsageError, match="k\\^m = 17\\^3 = 4913 code arrays, more than 4096"):
        model.exact_log_likelihood(X)


def test_codebook_usage():
    model = tiny().eval()
    with torch.no_grad():
        model.quantizer.codebook.zero_()
        model.quantizer.codebook[3] = 100.0  # by dot product every output picks it, or
        model.quantizer.codebook[4] = -100.0  # its mirror image
    usage = model.codebook_usage(X)
    chosen = (model.encoder(X).sum(-1) > 0).double()  # e . (100, 100, 100) > 0
    share = chosen.mean().item()
    entropy = -sum(p * math.log(p) for p in (share, 1 - share) if p > 0)
    assert usage["perplexity"] == pytest.approx(math.exp(entropy))
    assert usage["dead_codes"] == 5 - sum(p > 0 for p in (share, 1 - share))
    assert sum(usage["frequencies"]) == pytest.approx(1.0)


SMALL = ["--dataset", "digits", "--hidden-dims", "16", "--no-progress", "--model", "vqvae"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--vq-codes", "8"],
        # --validate: the model's prior checks that the guide's codes are codebook rows
        ["--vq-codes", "4", "--vq-slots", "2", "--vq-ema", "0.9", "--validate"],
    ],
)
def test_vqvae_trains_resumes_and_evaluates_from_the_command_line(tmp_path, extra):
    run = tmp_path / "run"
    assert main(["train", *SMALL, *extra, "--epochs", "1", "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert stored["kind"] == "vqvae" and stored["likelihood"] == {"name": "gaussian", "sigma": 1.0}
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2]
    assert (run / "samples.png").exists() and (run / "reconstructions.png").exists()
    results = json.loads((run / "results.json").read_text())
    usage = results["diagnostics"]
    frequencies = usage["code_frequencies"]
    assert len(frequencies) == usage["codes"] and sum(frequencies) == pytest.approx(1.0)
    assert usage["dead_codes"] == sum(f == 0 for f in frequencies)
    assert 1 <= usage["codebook_perplexity"] <= usage["codes"] - usage["dead_codes"] + 1e-9
    assert "codebook perplexity" in (run / "results.md").read_text()
    assert main(["evaluate", "--run", str(run), "--num-samples", "50", "--limit", "6"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vq-codes", "8"], "--vq-codes applies to --model vqvae"),
        (["--model", "vqvae", "--vq-codes", "1"], "at least 2 codes"),
        (["--model", "vqvae", "--vq-slots", "0"], "expected an integer in [1, 1048576], got 0"),
        (["--model", "vqvae", "--vq-ema", "1.5"], "expected a number in (0, 1), got 1.5"),
        (["--model", "vqvae", "--vq-select", "cosine"], "invalid choice: 'cosine'"),
    ],
)
def test_bad_vq_options_exit_2(tmp_path, capsys, argv, message):
    try:
        code = main(["train", "--dataset", "digits", *argv, "--out", str(tmp_path / "r")])
    except SystemExit as stop:  # refused by the parser
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_poutine_trace_of_the_model_has_the_code_site():
    model = tiny(slots=2)
    trace = poutine.trace(model.model).get_trace(X)
    assert trace.nodes["z"]["value"].shape == (3, 2, 3)
    assert isinstance(trace.nodes["z"]["fn"], Codebook)
