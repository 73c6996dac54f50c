"""The plain torch networks: shapes, layouts and the architectures that build them."""

import json

import numpy as np
import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.networks import (
    Architecture,
    ConvDecoder,
    ConvEncoder,
    Convolutional,
    as_architecture,
)


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (7, 5)])
def test_conv_shapes_with_leading_dimensions(shape):
    pixels = shape[0] * shape[1]
    encoder = ConvEncoder(shape, (16,), out_dim=6)
    decoder = ConvDecoder(3, (16,), shape, out_channels=2)
    assert encoder(torch.rand(4, 2, pixels)).shape == (4, 2, 6)  # particles x batch
    assert decoder(torch.randn(5, 3)).shape == (5, 2 * pixels)
    assert decoder(torch.randn(4, 5, 3)).shape == (4, 5, 2 * pixels)


def test_conv_encoder_sees_the_image_not_a_flat_vector():
    # the rows are unflattened into the image in row-major order: the first
    # convolution's top-left output (kernel 3, stride 2, padding 1) sees pixels
    # (0..1, 0..1) of the image and no other, whatever their place in the row
    torch.manual_seed(0)
    encoder = ConvEncoder((8, 8), (4,), out_dim=2)
    first = encoder.body[:2]  # unflatten, then the first convolution
    row = torch.zeros(1, 64)
    base = first(row)[0, :, 0, 0]
    for r, c, inside in [(2, 2, False), (0, 2, False), (2, 0, False), (1, 1, True)]:
        moved = row.clone()
        moved[0, r * 8 + c] = 1.0
        assert torch.equal(first(moved)[0, :, 0, 0], base) != inside, (r, c)


def test_conv_decoder_output_is_channel_major():
    # the likelihoods split (..., parts * pixels) into parts blocks of pixels: the
    # first block must be the first output channel of the image
    torch.manual_seed(0)
    decoder = ConvDecoder(3, (8,), (8, 8), out_channels=2)
    z = torch.randn(2, 3)
    out = decoder(z)
    maps = decoder.body[:-1](z)  # before the final flatten: (2, channels, 8, 8)
    assert maps.shape == (2, 2, 8, 8)
    assert torch.equal(out[:, :64], maps[:, 0].reshape(2, 64))
    assert torch.equal(out[:, 64:], maps[:, 1].reshape(2, 64))


def test_architectures():
    mlp = as_architecture((32, 16))
    assert isinstance(mlp, Architecture) and mlp.name == "mlp"
    assert [m.out_features for m in mlp.decoder(4, 10) if isinstance(m, torch.nn.Linear)] == [
        16,
        32,
        10,
    ]
    conv = Convolutional((32,), (8, 8))
    assert as_architecture(conv) is conv
    assert conv.encoder(64, 5)(torch.rand(3, 64)).shape == (3, 5)
    assert conv.decoder(5, 128)(torch.randn(3, 5)).shape == (3, 128)
    with pytest.raises(ValueError, match="takes 64 pixels, not 63"):
        conv.encoder(63, 5)
    with pytest.raises(ValueError, match="multiples of 64"):
        conv.decoder(5, 100)


SMALL = ["--dataset", "digits", "--hidden-dims", "16", "--no-progress", "--network", "conv"]


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory):
    """160 training and 24 test images of scikit-learn's digits as an npz data set: two
    steps of conv training per epoch, so that a run can be trained twice in a test."""
    from pyro_vae import data as data_mod

    digits = data_mod.load("digits")
    path = tmp_path_factory.mktemp("few") / "digits.npz"
    x_train, x_test = (t.reshape(-1, 8, 8).numpy() for t in (digits.x_train, digits.x_test))
    np.savez(path, x_train=x_train[:160], x_test=x_test[:24])
    return path


@pytest.mark.parametrize(
    "model",
    [
        ["--z-dim", "2"],
        ["--model", "hvae", "--z-dims", "4,2", "--hidden-dims", "16,8"],
        ["--model", "vqvae", "--vq-codes", "4"],
    ],
)
def test_conv_runs_train_sample_evaluate_and_resume(tmp_path, model, few_digits):
    from pictures import assert_axes_match

    from pyro_vae import plots
    from pyro_vae.cli import main
    from pyro_vae.evaluate import evaluate_dataset
    from pyro_vae.run import RunFolder, load_model
    from pyro_vae.splits import spread_subset

    run, once = tmp_path / "run", tmp_path / "once"
    train = ["train", *SMALL, "--dataset", f"npz:{few_digits}", *model]
    assert main([*train, "--epochs", "1", "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert stored["network"] == "conv"
    # resumed after its first epoch, the run continues as one trained for two epochs
    # at once: the same weights and history, draw for draw
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert main([*train, "--epochs", "2", "--out", str(once)]) == 0
    resumed, uninterrupted = (json.loads((r / "history.json").read_text()) for r in (run, once))
    assert resumed["epoch"] == uninterrupted["epoch"] == [1, 2]
    for key in ("train_objective", "test_elbo"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6), key
    states = [checkpoint.load(r / "checkpoint.pt") for r in (run, once)]
    assert states[0]["epoch"] == 2
    for key, value in states[1]["model_state"].items():
        torch.testing.assert_close(states[0]["model_state"][key], value, rtol=1e-6, atol=1e-7)

    # sample: the picture shows the model's decoded prior draws of the seeded generator
    assert main(["sample", "--run", str(run), "-n", "4", "--seed", "3"]) == 0
    vae = load_model(run)
    drawn = vae.sample(4, generator=torch.Generator().manual_seed(3))
    figure = plots.grid_figure(drawn, vae.image_shape, "4 samples from the prior (seed 3)")
    assert_axes_match(run / "prior_samples_4.png", figure, tmp_path)

    # evaluate: the report's numbers are the evaluator's on the same points and seed
    evaluate = ["evaluate", "--run", str(run), "--num-samples", "20", "--ks", "1,5", "--limit", "5"]
    gap = ["--gap-decomposition", "--gap-points", "2", "--gap-steps", "3"]
    vae_model = model[0] == "--z-dim"  # its per-point q* goes through the conv encoder
    assert main([*evaluate, "--seed", "4", *(gap if vae_model else []), "--no-progress"]) == 0
    report = json.loads((run / "eval_n5.json").read_text())
    dataset = RunFolder(run).read_config().data.load()
    (x,) = vae.evaluation_data(dataset, "test")
    x = x[spread_subset(len(x), 5)]
    ev = evaluate_dataset(vae.model, vae.proposal, x, num_samples=20, ks=(1, 5), seed=4)
    np.testing.assert_allclose(report["per_point"]["log_px"], ev.log_px.tolist(), rtol=1e-6)
    np.testing.assert_allclose(report["per_point"]["L_5"], ev.bounds[1].tolist(), rtol=1e-6)
    np.testing.assert_allclose(report["per_point"]["elbo"], ev.elbo.tolist(), rtol=1e-6)
    if vae_model:
        from pyro_vae.gaps import decompose_gap

        gaps = decompose_gap(vae, x[spread_subset(5, 2)], steps=3, num_samples=20, seed=4)
        for name in ("log_px", "elbo_amortized", "elbo_optimal"):
            expected = float(getattr(gaps, name).double().mean())
            assert report["gap_decomposition"][name]["mean"] == pytest.approx(expected, rel=1e-6)


def test_conv_on_data_that_are_not_images_exits_2(tmp_path, capsys):
    from pyro_vae.cli import main

    path = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((40, 5)), x_test=rng.random((4, 5)))
    args = ["train", "--dataset", f"npz:{path}", "--likelihood", "gaussian", "--network", "conv"]
    assert main([*args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--network conv needs images" in err and "Use --network mlp" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_conv_refused_by_models_without_it(tmp_path, capsys):
    from pyro_vae.cli import main

    args = ["train", "--dataset", "digits", "--model", "regressor", "--task", "label"]
    assert main([*args, "--network", "conv", "--out", str(tmp_path / "r")]) == 2
    assert "--network applies to" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["center-column", "label"])
def test_conv_cvae_trains_resumes_and_completes(tmp_path, task):
    from pyro_vae.cli import main

    run = tmp_path / "run"
    args = ["train", *SMALL, "--z-dim", "2", "--model", "cvae", "--task", task, "--epochs", "1"]
    assert main([*args, "--prior", "learned", "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert stored["network"] == "conv" and stored["image_shape"] == [8, 8]
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert main(["evaluate", "--run", str(run), "--num-samples", "10", "--limit", "4"]) == 0
    assert main(["complete", "--run", str(run), "--inputs", "2", "-n", "2"]) == 0


def test_partial_images_put_x_and_y_back_on_their_image():
    from pyro_vae.networks import CanvasDecoder, CanvasEncoder, PartialImages
    from pyro_vae.tasks import make_task, split

    task = make_task("quadrants-1", (8, 8))
    x_pixels, y_pixels = task.x_mask.nonzero()[:, 0], task.y_mask.nonzero()[:, 0]
    arch = PartialImages((4,), (8, 8), x_pixels, y_pixels)
    images = torch.rand(3, 64)
    x, y = split(task, images)
    encoder = arch.encoder(task.x_dim + task.y_dim, 5)
    assert isinstance(encoder, CanvasEncoder)
    # the canvas of [X, Y] is the image, and every pixel is marked as given
    canvas = torch.zeros(3, 64)
    canvas[:, encoder.pixel_places] = torch.cat([x, y], -1)[:, encoder.pixel_columns]
    torch.testing.assert_close(canvas, images)
    assert encoder.given.sum() == 64 and arch.encoder(task.x_dim, 5).given.sum() == 16
    decoder = arch.decoder(7, 2 * task.y_dim)
    assert isinstance(decoder, CanvasDecoder)
    z = torch.randn(3, 7)
    full = ConvDecoder.forward(decoder, z).unflatten(-1, (2, 64))
    torch.testing.assert_close(decoder(z), full[..., y_pixels].flatten(-2))
    with pytest.raises(ValueError, match="neither"):
        arch.encoder(3, 5)
