"""Every experiment script runs end to end with --quick, as a user would start it."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> Path:
    """``pyro-vae reproduce --quick`` once, as a user would start it: every experiment
    script in a fresh process, results in one folder per experiment."""
    out = tmp_path_factory.mktemp("reproduce")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pyro_vae", "reproduce", "--quick", "--out", str(out)),
            *("--jobs", "2", "--threads", "1"),  # two at a time, one core each
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.fixture
def run(quick_results):
    """``run(name, folder)``: the quick results of experiment ``name``, its files
    copied to ``folder``."""

    def load(name: str, folder: Path) -> dict:
        shutil.copytree(quick_results / name, folder, dirs_exist_ok=True)
        assert (folder / "results.md").read_text().count("|") > 10
        return json.loads((folder / "results.json").read_text())

    return load


def test_reproduce_collects_every_experiment(quick_results):
    from pyro_vae.cli.reproduce import discover

    experiments = discover(ROOT)
    page = (quick_results / "results.md").read_text()
    assert "Written by `pyro-vae reproduce --quick` (tiny budgets" in page
    for e in experiments:
        assert f"## {e.title}" in page and f"python experiments/{e.name}.py --quick" in page
        assert (ROOT / "docs" / e.page).is_file()  # every experiment has its page
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    assert len(links) >= len(experiments)
    for link in links:
        assert (quick_results / link).is_file(), link


def test_reproduce_collect_rebuilds_the_page_and_leaves_docs_alone(quick_results, capsys):
    from pyro_vae.cli import main

    docs_page = ROOT / "docs" / "results.md"
    before = docs_page.read_text() if docs_page.exists() else None
    (quick_results / "results.md").unlink()
    assert main(["reproduce", "--collect", "--out", str(quick_results)]) == 0
    page = (quick_results / "results.md").read_text()
    assert "--quick` (tiny budgets" in page  # the budgets say these were quick runs
    assert (docs_page.read_text() if docs_page.exists() else None) == before
    capsys.readouterr()
    empty = quick_results / "nothing-here"
    assert main(["reproduce", "--collect", "--only", "ring", "--out", str(empty)]) == 2
    assert f"--collect: {empty} is not a folder" in capsys.readouterr().err


def test_reproduce_results_do_not_depend_on_the_jobs(quick_results, tmp_path):
    # the fixture ran two experiments at a time; one at a time, with the same threads,
    # every number is the same (each experiment seeds itself)
    names = ["ring", "latent_dim"]
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pyro_vae", "reproduce", "--quick"),
            *("--only", ",".join(names), "--threads", "1", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in names:
        serial = json.loads((tmp_path / name / "results.json").read_text())
        parallel = json.loads((quick_results / name / "results.json").read_text())
        assert untimed(serial) == untimed(parallel), name


def untimed(value):
    """``value`` without the wall times (keys ending in ``seconds``), at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def test_reproduce_refuses_unknown_experiments(capsys):
    from pyro_vae.cli import main

    assert main(["reproduce", "--only", "ring,rings"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment(s) rings; valid: default_run, ring, pixel_distance" in err


def test_discover_finds_the_experiments_in_page_order():
    from pyro_vae.cli.reproduce import discover

    experiments = discover(ROOT)
    assert [e.name for e in experiments] == [
        "default_run",
        "ring",
        "pixel_distance",
        "naive_vs_importance",
        "prior_samples",
        "latent_dim",
        "manifold_2d",
        "gap_over_training",
        "autoencoder_limit",
        "sigma_sweep",
        "likelihoods",
        "cvae_completion",
        "guide_families",
        "vqvae",
        "networks",
        "estimators",
        "priors",
        "semi_supervised",
    ]
    ring, cvae = experiments[1], experiments[-7]
    assert ring.title == "Figure 2: a ring from N(0, I), and a VAE that learns it"
    assert (ring.page, ring.minutes) == ("ring.md", 1)
    assert (cvae.page, cvae.minutes) == ("cvae.md", 25)
    assert experiments[2].minutes == 0.2


GOOD_SCRIPT = """\"\"\"An experiment.\"\"\"

import module_that_does_not_exist

TITLE = "A good experiment"
PAGE = "good.md"
MINUTES = 0.5
ORDER = 2
"""


def test_discover_reads_the_constants_without_importing(tmp_path):
    from pyro_vae.cli.reproduce import Experiment, discover

    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "common.py").write_text("import nothing_here\n")  # helpers are not experiments
    (folder / "good.py").write_text(GOOD_SCRIPT)  # its import would fail: never run
    (folder / "first.py").write_text(
        GOOD_SCRIPT.replace("ORDER = 2", "ORDER = 1").replace("good", "first")
    )
    # the same ORDER: sorted by name
    (folder / "also_two.py").write_text(GOOD_SCRIPT.replace("good", "also_two"))
    assert discover(tmp_path) == (
        Experiment("first", "A first experiment", "first.md", 0.5),
        Experiment("also_two", "A also_two experiment", "also_two.md", 0.5),
        Experiment("good", "A good experiment", "good.md", 0.5),
    )


def test_discover_names_the_script_and_the_constant_it_lacks(tmp_path):
    from pyro_vae.cli.reproduce import discover
    from pyro_vae.errors import UsageError

    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "good.py").write_text(GOOD_SCRIPT)
    (folder / "bad.py").write_text(GOOD_SCRIPT.replace("MINUTES = 0.5\n", ""))
    with pytest.raises(UsageError, match=r"bad\.py does not declare MINUTES") as error:
        discover(tmp_path)
    assert "PAGE" not in str(error.value).split("declare")[1].split(":")[0]
    (folder / "bad.py").write_text(GOOD_SCRIPT.replace('PAGE = "good.md"', "PAGE = NAME + '.md'"))
    with pytest.raises(UsageError, match=r"bad\.py, line 6: PAGE must be a literal"):
        discover(tmp_path)
    (folder / "bad.py").write_text(GOOD_SCRIPT.replace("ORDER = 2", 'ORDER = "2"'))
    with pytest.raises(UsageError, match=r"bad\.py, line 8: ORDER must be an integer, not '2'"):
        discover(tmp_path)


def test_default_run_experiment(tmp_path, run):
    # the README's commands, each in a process of its own: the quick ones train the
    # 64-32-4 VAE on the 8x8 digits for one epoch and evaluate 40 test images at K = 20
    results = run("default_run", tmp_path)
    mlp, conv = results["runs"]["mlp"], results["runs"]["conv"]
    assert (mlp["dataset"], mlp["epochs"], mlp["model_config"]["network"]) == ("digits", 1, "mlp")
    assert conv["model_config"]["network"] == "conv"
    # 64-32-4 encoder (mean and log-scale heads) and 4-32-64 decoder, counted by hand
    assert mlp["parameters"] == (64 * 32 + 32) + 2 * (32 * 4 + 4) + (4 * 32 + 32) + (32 * 64 + 64)
    evaluation = results["evaluation"]
    assert (evaluation["num_points"], evaluation["num_samples"]) == (40, 20)
    assert (
        evaluation["num_samples_prior"] == 20
        and evaluation["gap_decomposition"]["num_points"] == 10
    )
    assert evaluation["run"] == "runs/mlp"  # no path of the machine that ran it
    page = (tmp_path / "results.md").read_text()
    assert f"| test | {mlp['test_elbo']:.2f} | {conv['test_elbo']:.2f} |" in page


def test_likelihoods_experiment(tmp_path, run):
    results = run("likelihoods", tmp_path)
    names = [m["likelihood"]["name"] for m in results["models"]]
    assert set(names) == {
        "bernoulli",
        "continuous-bernoulli",
        "gaussian",
        "laplace",
        "beta",
        "discretized-logistic",
    }
    for m in results["models"]:
        # every model here is comparable: discrete, or a density on dequantized pixels
        d = 784
        log_px = m["log_px"]["mean"]
        if m["likelihood"]["name"] in ("bernoulli", "discretized-logistic"):
            expected = -log_px / (d * math.log(2))
        else:
            assert m["dequantized"]
            expected = -(log_px - d * math.log(256)) / (d * math.log(2))
        assert m["bits_per_dim_log_px"] == pytest.approx(expected)
        assert m["bits_per_dim_log_px"] > 0  # no model beats zero bits
    assert [m["data"] for m in results["models"]].count("binarized") == 1
    sample_rows(tmp_path / "samples.png", len(results["models"]), 10, tmp_path)


def test_sigma_sweep_experiment(tmp_path, run):
    results = run("sigma_sweep", tmp_path)
    rows = {str(r["sigma"]): r for r in results["rows"]}
    assert set(rows) == {"0.03", "0.1", "0.2", "0.5", "1.0", "shared"}
    # a larger sigma makes reconstruction cheap relative to the KL term: even after one
    # epoch the KL term at sigma = 1 is far below that at sigma = 0.03
    assert rows["1.0"]["kl"]["mean"] < 0.7 * rows["0.03"]["kl"]["mean"]
    assert rows["1.0"]["active_units"] <= rows["0.03"]["active_units"]
    assert rows["shared"]["learned_sigma"] > 1e-3  # bounded below, as documented
    for r in rows.values():
        # the count agrees with the saved per-unit activity and Burda et al.'s threshold
        activity = r["unit_activity"]
        assert len(activity) == results["budget"]["z_dim"]
        assert r["active_units"] == sum(v > 0.01 for v in activity)
        assert r["kl"]["mean"] > 0  # a KL divergence; zero only if Q(z|X) = N(0, I)
    sample_rows(tmp_path / "reconstructions.png", 1 + len(rows), 10, tmp_path)  # inputs too
    sample_rows(tmp_path / "samples.png", len(rows), 10, tmp_path)
    sweep = experiment_module("sigma_sweep")
    figure = sweep.tradeoff_figure(results["rows"], results["budget"]["z_dim"])
    redrawn(tmp_path / "tradeoff.png", figure, tmp_path)


def test_cvae_completion_experiment(tmp_path, run):
    from pictures import assert_not_blank, completion_panels

    from pyro_vae import data as data_mod
    from pyro_vae.tasks import make_task

    results = run("cvae_completion", tmp_path)
    tasks = {r["task"]: r for r in results["tasks"]}
    assert set(tasks) == {"center-column", "quadrants-1", "quadrants-2", "quadrants-3", "label"}
    assert tasks["center-column"]["x_dim"] == 28 and tasks["label"]["x_dim"] == 10
    for name, r in tasks.items():
        assert r["regressor"]["mean"] < 0  # an exact Bernoulli log-probability
        for prior in ("fixed", "learned"):
            m = r[f"cvae_{prior}"]
            # the evaluator's ELBO (K samples per image) and the 10-particle ELBO of
            # mean_elbo estimate one number per image on the same images from independent
            # samples: the difference is sampling noise only, far below the spread over
            # images (a sum over images, or a sign slip, would be hundreds of nats off)
            elbo = m["elbo"]
            assert abs(m["negative_elbo_10_particles"] + elbo["mean"]) < 4 * elbo["stderr"]
        if name == "label":  # X is a one-hot label, drawn as a title: no pixels to find
            assert_not_blank(tmp_path / f"{name}.png")
            continue
        # 8 test images: ground truth, the regressor's mean, 2 draws of each CVAE, all
        # with the condition's pixels as given
        task = make_task(name, data_mod.load("mnist5k").image_shape)
        panels = completion_panels(tmp_path / f"{name}.png", task)
        assert panels.shape[:2] == (6, 8), name
        given = task.x_mask.reshape(task.image_shape).numpy()
        assert (panels[1:, :, given] == panels[:1, :, given]).all(), name


def experiment_module(name: str):
    """Import ``experiments/NAME.py`` (its folder holds ``common.py``, which it imports)."""
    import importlib

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def sample_rows(path: Path, rows: int, per_row: int, tmp_path: Path, shape=(28, 28)) -> None:
    """The figure at ``path`` shows ``rows`` labelled rows of ``per_row`` images each
    (:func:`pyro_vae.plots.labelled_rows_figure`), something drawn in every row."""
    from pictures import assert_layout, grey

    from pyro_vae.plots import labelled_rows_figure

    pixels = shape[0] * shape[1]
    layout = [(f"row {i}", grey(per_row, pixels)) for i in range(rows)]
    assert_layout(path, labelled_rows_figure(layout, shape, "layout"), tmp_path)


def redrawn(path: Path, figure, tmp_path: Path) -> None:
    """The figure at ``path`` is ``figure``, drawn again here from the results it shows."""
    from pictures import assert_axes_match

    assert_axes_match(path, figure, tmp_path)


# The mathematics each experiment relies on, checked on its own (no training).


def test_ring_density_and_radius_are_exact():
    import torch

    ring = experiment_module("ring")
    # the density integrates to one (midpoint rule on a 0.004 grid; the mass beyond
    # radius 2 is exp(-50))
    axis = torch.arange(-2.0, 2.0, 0.004) + 0.002
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.flatten(), yy.flatten()], -1).double()
    total = ring.exact_log_density(points).exp().sum().item() * 0.004**2
    assert total == pytest.approx(1.0, abs=2e-3)
    # and g(z) samples have the closed-form mean radius, 1 + sqrt(pi/2)/10: 200,000
    # draws, tolerance 4 standard errors (radius s.d. 0.0655)
    _, x = ring.ring_data(200_000, seed=123)
    assert ring.EXACT_MEAN_RADIUS == pytest.approx(1 + math.sqrt(math.pi / 2) / 10)
    assert x.norm(dim=-1).mean().item() == pytest.approx(
        ring.EXACT_MEAN_RADIUS, abs=4 * 0.0655 / math.sqrt(200_000)
    )


def test_half_pixel_shift_and_erasure_distances():
    import torch

    pd = experiment_module("pixel_distance")
    # one lit pixel shifted by half a pixel spreads over four: (3/4)^2 + 3 (1/4)^2 = 0.75
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1
    shifted = pd.shift_half_pixel(dot)
    assert shifted[0, 2:4, 2:4].eq(0.25).all() and shifted.sum() == 1  # down and right
    assert pd.sq_distance(dot, shifted).item() == pytest.approx(0.75)
    # erasing removes exactly the ink of the lowest rows: their squares are the distance
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    image[:, 6:] = 0  # the lowest ink is in row 5
    erased = pd.erase_bottom(image, rows=2)
    assert torch.equal(erased[:, :4], image[:, :4]) and (erased[:, 4:] == 0).all()
    expected = (image[:, 4:6] ** 2).flatten(1).sum(-1)
    torch.testing.assert_close(pd.sq_distance(image, erased), expected)


def test_prefix_estimates_and_the_naive_estimators_bias():
    import torch

    nvi = experiment_module("naive_vs_importance")
    assert nvi.sample_sizes(1000) == [1, 3, 10, 30, 100, 300, 1000]
    assert nvi.sample_sizes(300) == [1, 3, 10, 30, 100, 300]
    log_w = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 10
    got = nvi.prefix_estimates(log_w, [1, 7, 50])
    for row, k in zip(got, [1, 7, 50], strict=True):
        torch.testing.assert_close(row, torch.logsumexp(log_w[:k], 0) - math.log(k))
    # log-normal weights, log w ~ N(mu, 1): log E[w] = mu + 1/2 exactly. One sample is
    # unbiased for mu, so its bias for log E[w] is -1/2; with K samples the bias is about
    # -(e - 1) / (2K). 20,000 independent columns; tolerances: 4 standard errors plus
    # the second-order bias term
    mu, n = -3.0, 20_000
    log_w = mu + torch.randn(1000, n, generator=torch.Generator().manual_seed(1))
    first, last = nvi.prefix_estimates(log_w, [1, 1000]).double().mean(-1)
    assert first.item() == pytest.approx(mu, abs=4 / math.sqrt(n))
    assert last.item() == pytest.approx(mu + 0.5 - (math.e - 1) / 2000, abs=0.01)
    # leave-one-out references never use the repeat they judge
    sums = torch.tensor([[0.0], [math.log(3.0)], [math.log(5.0)]])
    ref = nvi.leave_one_out_reference(sums, k=2)
    expected = torch.tensor([[math.log(8 / 4)], [math.log(6 / 4)], [math.log(4 / 4)]])
    torch.testing.assert_close(ref, expected.float())


def test_nearest_distances_quantile_grid_and_knn():
    import torch

    ps, m2 = experiment_module("prior_samples"), experiment_module("manifold_2d")
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    queries = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 5.0]])
    torch.testing.assert_close(
        ps.nearest_sq_distance(queries, reference), torch.tensor([0.0, 9.0, 1.0])
    )
    grid = m2.quantile_grid(4)  # quantiles 1/8, 3/8, 5/8, 7/8 of N(0, 1)
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert grid.shape == (16, 2)
    torch.testing.assert_close(grid[:4, 0], q)  # the first row runs along z_1 ...
    assert (grid[:4, 1] == q[-1]).all()  # ... at the highest z_2
    train_z = torch.tensor([[0.0], [0.1], [5.0], [5.1], [5.2]])
    train_y = torch.tensor([0, 0, 1, 1, 1])
    test_z, test_y = torch.tensor([[0.05], [5.05]]), torch.tensor([0, 0])
    assert m2.knn_accuracy(train_z, train_y, test_z, test_y, k=1) == 0.5


def test_quantile_grid_two_by_two():
    import torch

    m2 = experiment_module("manifold_2d")
    # q = 1/4, 3/4: Phi^-1(3/4) = 0.6744897...; rows from high z_2 to low, z_1 left to right
    a = 0.6744897501960817
    expected = torch.tensor([[-a, a], [a, a], [-a, -a], [a, -a]])
    torch.testing.assert_close(m2.quantile_grid(2), expected)
    assert m2.quantile_grid(1).tolist() == [[0.0, 0.0]]  # the median of N(0, 1)


def test_knn_votes_and_ties():
    import torch

    m2 = experiment_module("manifold_2d")
    # on a line: class 2 at 0, 1, 2; class 1 at 10, 11; class 0 at 20
    train_z = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    train_y = torch.tensor([2, 2, 2, 1, 1, 0])
    # the 3 nearest of 1.2 are all class 2; of 10.4: 10, 11 (class 1) and 2 (class 2);
    # of 19: 20 (class 0), 11 and 10 (class 1): a majority of 2 beats the nearest point
    test_z = torch.tensor([[1.2], [10.4], [19.0]])
    assert m2.knn_accuracy(train_z, train_y, test_z, torch.tensor([2, 1, 1]), k=3) == 1.0
    assert m2.knn_accuracy(train_z, train_y, test_z, torch.tensor([2, 1, 0]), k=3) == pytest.approx(
        2 / 3
    )
    # a 1-1 tie goes to the smaller label: the 2 nearest of 15.5 are 11 (1) and 20 (0)
    tie = torch.tensor([[15.5]])
    assert m2.knn_accuracy(train_z, train_y, tie, torch.tensor([0]), k=2) == 1.0
    assert m2.knn_accuracy(train_z, train_y, tie, torch.tensor([1]), k=2) == 0.0


def test_autoencoder_limit_active_threshold():
    ae = experiment_module("autoencoder_limit")
    # Burda et al.'s 0.01 for a learned scale; below it a fixed s^2: the code must move
    # by more than the encoder's own noise
    assert ae.active_threshold(None) == 0.01
    assert ae.active_threshold(1.0) == 0.01
    assert ae.active_threshold(0.1) == 0.01
    assert ae.active_threshold(0.01) == pytest.approx(1e-4)


def test_fixed_scale_kl_identity_and_guide():
    import pyro.poutine as poutine
    import torch

    ae = experiment_module("autoencoder_limit")
    # the KL term of N(mu, s^2 I) against N(0, I) is ||mu||^2 / 2 plus a constant in s
    mu = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    for s in (1.0, 0.1, 0.01):
        q = torch.distributions.Normal(mu, s)
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        torch.testing.assert_close(kl, 0.5 * (mu**2).sum(-1) + ae.kl_constant(3, s))
    assert ae.kl_constant(3, 1.0) == 0.0  # the notes' s = 1: exactly AE loss + L2
    vae = ae.FixedScaleVAE(16, z_dim=3, hidden_dims=(8,), fixed_scale=0.1)
    trace = poutine.trace(vae.guide).get_trace(torch.rand(4, 16).round())
    assert torch.equal(trace.nodes["z"]["fn"].base_dist.scale, torch.full((4, 3), 0.1))


# Each experiment end to end, from the one quick reproduce run.


def test_ring_experiment(tmp_path, run):
    import torch

    ring = experiment_module("ring")
    results = run("ring", tmp_path)
    r = results["radius"]["data"]
    # the test points are samples of g(z): 4 standard errors around the exact mean radius
    assert abs(r["mean"] - results["exact_mean_radius"]) < 4 * r["stderr"]
    # D[p || P_model] >= 0: the model cannot beat the exact density by more than the
    # estimate's noise (4 paired standard errors)
    kl = results["kl_data_to_model"]
    assert kl["mean"] > -4 * kl["stderr"]
    # the test points again, from their documented stream (seed 2 * seed + 1): every
    # point of the ring lies outside the unit circle, so none is in the hole
    _, x = ring.ring_data(ring.TEST_POINTS, seed=2 * results["budget"]["seed"] + 1)
    x = x[: results["test_points"]]
    assert r["mean"] == pytest.approx(x.norm(dim=-1).mean().item(), rel=1e-6)
    assert results["fraction_in_hole"]["data"] == 0.0
    exact = ring.exact_log_density(x)
    assert torch.isfinite(exact).all()
    assert results["exact_log_density"]["mean"] == pytest.approx(exact.mean().item(), rel=1e-6)
    from pictures import assert_not_blank

    assert_not_blank(tmp_path / "ring.png")


def test_pixel_distance_experiment(tmp_path, run):
    """Every number of the quick run recomputed from the digits, by other means."""
    import torch
    import torch.nn.functional as F
    from pictures import assert_not_blank

    from pyro_vae import data as data_mod

    pd = experiment_module("pixel_distance")
    results = run("pixel_distance", tmp_path)
    dataset = data_mod.load("mnist5k")
    idx = pd.spread_subset(len(dataset.x_test), results["budget"]["test_images"])
    x = dataset.x_test[idx].double().reshape(-1, 28, 28)
    labels = dataset.y_test[idx]
    train = dataset.x_train.double()
    assert results["test_images"] == len(x) and results["train_images"] == len(train)

    # (c): the mean of each 2x2 window of the image padded by one zero row and column
    # on top and left
    shifted = F.avg_pool2d(F.pad(x, (1, 0, 1, 0)).unsqueeze(1), 2, stride=1).squeeze(1)
    d_shifted = ((x - shifted) ** 2).sum((1, 2))

    def erased_distance(rows: int) -> torch.Tensor:
        # (b) differs from X only in the erased rows: the distance is their ink squared
        out = []
        for image in x:
            ink_rows = [i for i in range(28) if image[i].max() > pd.INK]
            last = ink_rows[-1]
            out.append((image[last - rows + 1 : last + 1] ** 2).sum())
        return torch.stack(out)

    d_erased = erased_distance(pd.ERASE_ROWS)
    approx = pytest.approx
    assert results["sq_distance_erased"]["mean"] == approx(d_erased.mean().item(), rel=1e-5)
    assert results["sq_distance_shifted"]["mean"] == approx(d_shifted.mean().item(), rel=1e-5)
    closer = (d_erased < d_shifted).double()
    assert results["fraction_erased_closer_than_shifted"] == approx(closer.mean().item())
    for row in results["erase_sweep"]:
        d = erased_distance(row["rows"])
        assert row["sq_distance_erased"]["mean"] == approx(d.mean().item(), rel=1e-5)
        share = (d < d_shifted).double().mean().item()
        assert row["fraction_closer_than_shifted"] == approx(share)

    # sigma rejects (b) by e^-REJECT_NATS: ||X - b||^2 / (2 sigma^2) = REJECT_NATS
    sigma2 = d_erased / (2 * pd.REJECT_NATS)
    assert results["sigma"]["mean"] == approx(sigma2.sqrt().mean().item(), rel=1e-5)
    ratio = (d_shifted / (2 * sigma2)).mean().item()
    assert results["shifted_minus_log_ratio_nats"]["mean"] == approx(ratio, rel=1e-5)

    # the training digits, one test digit at a time (no cdist)
    nearest_same, n_closer, ess = [], [], []
    for image, label, d_b, s2 in zip(x.flatten(1), labels, d_erased, sigma2, strict=True):
        d_train = ((train - image) ** 2).sum(-1)  # (4000,)
        nearest_same.append(d_train[dataset.y_train == label].min())
        n_closer.append(float((d_train < d_b).sum()))
        w = torch.softmax(-d_train / (2 * s2), 0)
        ess.append(1 / (w**2).sum())
    nearest = torch.stack(nearest_same).mean().item()
    key = "sq_distance_nearest_training_digit_same_class"
    assert results[key]["mean"] == approx(nearest, rel=1e-4)
    counts = results["training_digits_closer_than_erased"]
    assert counts["mean"] == approx(sum(n_closer) / len(n_closer), abs=0.05)
    ess = torch.stack(ess)
    assert results["ess_of_training_digits"]["mean"] == approx(ess.mean().item(), rel=1e-3)
    assert results["ess_of_training_digits"]["max"] == approx(ess.max().item(), rel=1e-3)
    assert_not_blank(tmp_path / "pixel_distance.png")


def test_naive_vs_importance_experiment(tmp_path, run):
    results = run("naive_vs_importance", tmp_path)
    first, last = results["rows"][0], results["rows"][-1]
    assert first["k"] == 1 and last["k"] == results["k_max"]
    # at K = 1 the naive estimate is log P(X|z) for one z from the prior: by Jensen its
    # expectation lies below log P(X); more samples raise both estimators
    assert first["prior"]["mean_minus_reference"] < 0
    for name in ("prior", "guide"):
        assert last[name]["mean_minus_reference"] > first[name]["mean_minus_reference"]
    # against an independent reference, Q gets closer than the prior at every K
    for row in results["rows"]:
        assert row["guide"]["mean_minus_reference"] > row["prior"]["mean_minus_reference"]
    figure = experiment_module("naive_vs_importance").estimator_figure(results)
    redrawn(tmp_path / "naive_vs_importance.png", figure, tmp_path)


def test_estimators_experiment(tmp_path, run):
    est = experiment_module("estimators")
    results = run("estimators", tmp_path)
    assert list(results["models"]) == ["vae", "hvae"]
    for name, m in results["models"].items():
        ks = [r["k"] for r in m["is"]]
        ts = [r["t"] for r in m["ais"]]
        assert ks == list(est.QUICK["is_ks"]) and ts == list(est.QUICK["ais_steps"][name])
        # every row is paired with the AIS estimate at the largest T: its mean difference
        # is the difference of the means
        reference = m["ais"][-1]["log_px"]["mean"]
        assert m["reference_steps"] == ts[-1]
        for row in m["is"] + m["ais"]:
            assert row["minus_reference"]["mean"] == pytest.approx(
                row["log_px"]["mean"] - reference, abs=1e-4
            )
        published = next(r for r in m["is"] if r["k"] == results["published_k"])
        assert m["published_minus_reference"]["mean"] == pytest.approx(
            published["log_px"]["mean"] - reference, abs=1e-4
        )
        assert m["first_k_within"] == est.first_within(m["is"], results["within_nats"])
        assert len(m["khat"]["values"]) == results["khat_images"] == 20
        (bdmc,) = m["bdmc"]
        assert bdmc["t"] == est.QUICK["bdmc_steps"][0]
        assert bdmc["width"]["mean"] > 0  # at T = 5 the sandwich is wide open
    redrawn(tmp_path / "estimators.png", est.cost_figure(results), tmp_path)
    redrawn(tmp_path / "khat.png", est.khat_figure(results), tmp_path)


def test_estimators_prefix_estimates_and_first_k_within():
    est = experiment_module("estimators")
    log_w = torch.log(torch.tensor([[1.0, 4.0], [3.0, 2.0], [2.0, 0.5], [6.0, 1.5]]))
    # log of the running means of the weights, by hand
    expected = torch.tensor([[1.0, 4.0], [2.0, 3.0], [3.0, 2.0]]).log().double()
    torch.testing.assert_close(est.prefix_estimates(log_w, [1, 2, 4]), expected)

    def rows(means):
        return [{"k": 10**i, "minus_reference": {"mean": m}} for i, m in enumerate(means)]

    assert est.first_within(rows([-3.0, -0.5, -0.05, 0.02]), 0.1) == 100
    assert est.first_within(rows([-0.05, -0.5, -0.05]), 0.1) == 100  # must hold from then on
    assert est.first_within(rows([-3.0, -0.5]), 0.1) is None


def test_prior_samples_experiment(tmp_path, run):
    """The distances of the quick run, recomputed as Hamming distances of binary images."""
    from pyro_vae import data as data_mod

    ps = experiment_module("prior_samples")
    results = run("prior_samples", tmp_path)
    d = results["nearest_training_sq_distance"]
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    x = dataset.x_test[ps.spread_subset(len(dataset.x_test), results["test_images"])]
    train = ps.evaluation_split(dataset, "train")  # the fixed binarization the run used
    x, train = x.double(), train.double()
    assert set(x.unique().tolist()) <= {0.0, 1.0} and set(train.unique().tolist()) <= {0.0, 1.0}
    # for 0/1 vectors ||a - b||^2 = |a| + |b| - 2 a.b: the number of differing pixels
    hamming = x.sum(-1, keepdim=True) + train.sum(-1) - 2 * x @ train.T  # (40, 4000)
    expected = hamming.min(-1).values.mean().item()
    assert d["test_images"]["mean"] == pytest.approx(expected, rel=1e-5)
    # binary samples are 0/1 images too: each distance is a whole number of pixels
    total = d["binary_samples"]["mean"] * results["num_samples"]
    assert total == pytest.approx(round(total), abs=0.05)
    from pictures import assert_layout, grey

    from pyro_vae.plots import grid_figure, reconstruction_figure

    n = results["num_samples"]
    for name in ("samples.png", "binary_samples.png"):
        assert_layout(tmp_path / name, grid_figure(grey(n), (28, 28), "", ncols=10), tmp_path)
    layout = reconstruction_figure(grey(40), grey(40), (28, 28), "")
    assert_layout(tmp_path / "reconstructions.png", layout, tmp_path)


def test_manifold_2d_experiment(tmp_path, run):
    results = run("manifold_2d", tmp_path)
    assert results["budget"]["z_dim"] == 2 and len(results["posterior_mean_std"]) == 2
    # the table shows the saved numbers
    table = (tmp_path / "results.md").read_text()
    assert f"| {100 * results['knn_accuracy']:.1f}% |" in table
    std = ", ".join(f"{v:.2f}" for v in results["posterior_mean_std"])
    assert f"| posterior means: s.d. per dimension | {std} |" in table
    from pictures import assert_layout, assert_not_blank, grey

    from pyro_vae.plots import grid_figure

    side = experiment_module("manifold_2d").GRID
    layout = grid_figure(grey(side * side), (28, 28), "", ncols=side)
    assert_layout(tmp_path / "manifold.png", layout, tmp_path)
    assert_not_blank(tmp_path / "latent.png")


def test_latent_dim_experiment(tmp_path, run):
    results = run("latent_dim", tmp_path)
    rows = {r["z_dim"]: r for r in results["rows"]}
    assert set(rows) == {2, 8}
    assert results["threshold"] == 0.01
    for z_dim, r in rows.items():
        # the saved per-unit KL terms: one per unit, sorted, each a KL divergence (>= 0);
        # the whole KL term and the informative units are recomputed from them
        per_unit = r["kl_per_unit_sorted"]
        assert len(per_unit) == z_dim and per_unit == sorted(per_unit, reverse=True)
        assert min(per_unit) >= 0
        assert r["kl"] == pytest.approx(sum(per_unit), rel=1e-5)
        assert r["informative_units"] == sum(v > results["kl_unit_threshold"] for v in per_unit)
        # ELBO = E_Q[log P(X|z)] - KL with log P(X|z) <= 0 for binary pixels: the ELBO
        # lies below -KL (its sampling noise is far smaller than the reconstruction term)
        assert r["elbo"]["mean"] < -r["kl"]
    sample_rows(tmp_path / "samples.png", len(rows), 12, tmp_path)
    figure = experiment_module("latent_dim").latent_figure(results["rows"])
    redrawn(tmp_path / "latent_dim.png", figure, tmp_path)


def test_autoencoder_limit_experiment(tmp_path, run):
    ae = experiment_module("autoencoder_limit")
    results = run("autoencoder_limit", tmp_path)
    rows = {r["scale"]: r for r in results["rows"]}
    assert set(rows) == {None, 1.0, 0.1, 0.01}
    z_dim = results["budget"]["z_dim"]
    for s in (1.0, 0.1, 0.01):
        assert rows[s]["terms"]["kl_constant"]["mean"] == pytest.approx(ae.kl_constant(z_dim, s))
    for r in rows.values():
        # the closed-form decomposition and the evaluator's sampled ELBO estimate one
        # number from independent samples: paired per image, within 4 standard errors
        diff = r["closed_form_minus_sampled"]
        assert abs(diff["mean"]) < 4 * diff["stderr"]
    sample_rows(tmp_path / "samples.png", len(rows), 12, tmp_path)


def test_gap_over_training_experiment(tmp_path, run):
    results = run("gap_over_training", tmp_path)
    assert set(results["curves"]) == {"elbo", "iwae"}
    for rows in results["curves"].values():
        assert [r["epoch"] for r in rows] == [1, 2]
        for r in rows:
            assert r["bound"] is not None  # the quick run takes the L_50 path too
        # a second epoch of training raises log P(X) by far more than the estimate's noise
        assert rows[1]["log_px"]["mean"] > rows[0]["log_px"]["mean"] + 10
    figure = experiment_module("gap_over_training").gap_figure(results)
    redrawn(tmp_path / "gap_over_training.png", figure, tmp_path)


def test_guide_families_experiment(tmp_path, run):
    results = run("guide_families", tmp_path)
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == [
        "diagonal",
        "full-covariance",
        "iaf-2",
        "iaf-4",
        "diagonal-burda",
        "two-layer",
    ]
    # the quick sizes, 784-32-4, counted by hand: the encoder's last layer gives loc and
    # scale (2 x 4 outputs) for the diagonal guide, loc and the 10 entries of L for the
    # full covariance; the decoder is 4-32-784
    encoder = 784 * 32 + 32 + 32 * 8 + 8
    decoder = 4 * 32 + 32 + 32 * 784 + 784
    assert rows["diagonal"]["parameters"] == encoder + decoder
    assert rows["full-covariance"]["parameters"] == encoder + decoder + (32 + 1) * (14 - 8)
    assert rows["diagonal"]["networks"] == "784-32-4"
    assert rows["two-layer"]["networks"] == "784-32-32-4-16-16-2"
    for name, r in rows.items():
        seed_means = r["log_px"]["seed_means"]
        assert len(seed_means) == 2 and seed_means[0] != seed_means[1]  # two seeds, two models
        assert r["epoch_seconds"] > 0
        # the two-layer model has two latent sites: no per-point q*, so no split
        assert (r["approximation"] is None) == (name == "two-layer")
        assert len(r["active_units"]) == (2 if name == "two-layer" else 1)
        assert len(r["test_elbo_curve"]) == results["budget"]["epochs"]
    assert (tmp_path / "results.md").read_text().count("\n| two-layer |") == 2
    figure = experiment_module("guide_families").gap_figure(results)
    redrawn(tmp_path / "guide_families.png", figure, tmp_path)
    sample_rows(tmp_path / "samples.png", len(rows), 12, tmp_path)


def test_guide_families_averages_over_seeds_before_pairing_images():
    gf = experiment_module("guide_families")
    row = gf.ROWS[1]

    def run_of(log_px, elbo):
        log_px, elbo = torch.tensor(log_px), torch.tensor(elbo)
        return dict(
            log_px=log_px,
            bound=log_px,
            elbo=elbo,
            parameters=1,
            networks="1-1",
            epoch_seconds=1.0,
            test_elbo_curve=[-3.0, float(elbo.mean())],
            active_units=[2],
        )

    runs = [run_of([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), run_of([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])]
    reference = [run_of([0.0, 0.0, 0.0], [0.0] * 3), run_of([2.0, 2.0, 2.0], [0.0] * 3)]
    out = gf.summarize(row, runs, reference)
    # seed-averaged per image: log P(X) = (2, 3, 4), the reference (1, 1, 1)
    assert out["log_px"]["mean"] == pytest.approx(3.0)
    assert out["log_px"]["stderr"] == pytest.approx(1 / math.sqrt(3))
    assert out["log_px"]["seed_means"] == pytest.approx([2.0, 4.0])
    assert out["log_px_vs_reference"]["mean"] == pytest.approx(2.0)
    assert out["log_px_vs_reference"]["stderr"] == pytest.approx(1 / math.sqrt(3))
    # the gap per image is (2, 3, 4) - (0.5, 0.5, 0.5)
    assert out["gap"]["mean"] == pytest.approx(2.5)
    assert out["approximation"] is None  # no gap decomposition in these runs
    assert out["test_elbo_curve"] == pytest.approx([-3.0, 0.5])  # epoch by epoch, over seeds


def test_priors_experiment(tmp_path, run):
    results = run("priors", tmp_path)
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["standard", "mixture", "vamp", "vamp-data", "flow"]
    # the parameters of P(z) alone at the quick z_dim 4, counted by hand: the mixture's
    # 10 logits, means and log-scales; the VampPrior's 50 pseudo-images; each of the
    # flow's 4 couplings maps the first 2 coordinates through 64 hidden units to a shift
    # and a log-scale of the other 2
    assert rows["standard"]["prior_parameters"] == 0
    assert rows["mixture"]["prior_parameters"] == 10 + 2 * 10 * 4
    assert rows["vamp"]["prior_parameters"] == rows["vamp-data"]["prior_parameters"] == 50 * 784
    assert rows["flow"]["prior_parameters"] == 4 * ((2 * 64 + 64) + (64 * 4 + 4))
    assert rows["vamp-data"]["prior"] == {"name": "vamp", "components": 50, "init": "data"}
    for name, r in rows.items():
        seed_means = r["log_px"]["seed_means"]
        assert len(seed_means) == 2 and seed_means[0] != seed_means[1]  # two seeds, two models
        components = r["prior"].get("components")
        if components is None:
            assert r["components_in_use"] is None, name
        else:
            assert 1.0 <= r["components_in_use"] <= components, name
        assert r["kl_term"] > 0 and 0 <= r["active_units"] <= 4
        assert len(r["test_elbo_curve"]) == results["budget"]["epochs"]
    assert rows["standard"]["log_px_vs_reference"]["mean"] == 0.0
    assert (tmp_path / "results.md").read_text().count("\n| flow, T = 4 |") == 2
    redrawn(tmp_path / "priors.png", experiment_module("priors").figure(results), tmp_path)
    sample_rows(tmp_path / "samples.png", len(rows), 12, tmp_path)


def test_priors_averages_over_seeds_before_pairing_images():
    study = experiment_module("priors")

    def run_of(log_px, elbo, kl):
        return dict(
            log_px=torch.tensor(log_px),
            elbo=torch.tensor(elbo),
            kl_term=kl,
            active_units=3,
            components_in_use=None,
            parameters=0,
            prior={"name": "standard"},
            epoch_seconds=1.0,
            test_elbo_curve=[-3.0, -1.0],
        )

    runs = [run_of([1.0, 2.0, 3.0], [0.0] * 3, 4.0), run_of([3.0, 4.0, 5.0], [1.0] * 3, 6.0)]
    reference = [run_of([0.0] * 3, [0.0] * 3, 1.0), run_of([2.0] * 3, [2.0] * 3, 1.0)]
    out = study.summarize(study.ROWS[0], runs, reference)
    # seed-averaged per image: log P(X) = (2, 3, 4), the reference (1, 1, 1)
    assert out["log_px"]["mean"] == pytest.approx(3.0)
    assert out["log_px"]["stderr"] == pytest.approx(1 / math.sqrt(3))
    assert out["log_px_vs_reference"]["mean"] == pytest.approx(2.0)
    assert out["log_px_vs_reference"]["stderr"] == pytest.approx(1 / math.sqrt(3))
    assert out["elbo_vs_reference"]["mean"] == pytest.approx(-0.5)
    assert out["kl_term"] == pytest.approx(5.0)  # over seeds
    assert out["reconstruction"] == pytest.approx(0.5 + 5.0)  # E_Q[log P(X|z)] = ELBO + KL
    assert out["gap"]["mean"] == pytest.approx(2.5)


def test_semi_supervised_experiment(tmp_path, run):
    results = run("semi_supervised", tmp_path)
    rows = results["rows"]
    assert [r["labels"] for r in rows] == [10, 20]
    for r in rows:
        for key in ("m2_error", "classifier_error"):
            seeds = r[key]["seeds"]
            assert len(seeds) == 2 and all(0 <= e <= 1 for e in seeds)
            # 1,000 test images: every error is a whole number of them
            assert all(abs(e * 1000 - round(e * 1000)) < 1e-6 for e in seeds)
        assert r["epoch_seconds"] > 0 and math.isfinite(r["test_elbo"]["mean"])
    shown = (tmp_path / "results.md").read_text()
    first = rows[0]
    cell = f"{100 * first['m2_error']['mean']:.2f} ± {100 * first['m2_error']['stderr']:.2f}"
    assert f"| 10 | {cell} |" in shown
    probes = {p["name"]: p for p in results["probes"]}
    assert [(p["alpha"], p["epochs"], p["labels"]) for p in probes.values()] == [
        (500.0, 1, 10),
        (50.0, 6, 10),
    ]
    assert all(0 <= p[k] <= 1 for p in probes.values() for k in ("m2_error", "classifier_error"))
    sample_rows(tmp_path / "styles.png", 6, 10, tmp_path)
    sample_rows(tmp_path / "analogies.png", 6, 11, tmp_path)


def test_the_classifier_alone_reads_the_labelled_images_only():
    """The baseline is trained on M2's labelled images and nothing else: blanking every
    other training image leaves its weights exactly as they were."""
    from dataclasses import replace

    from pyro_vae import data as data_mod
    from pyro_vae.models import SSVAE

    study = experiment_module("semi_supervised")
    digits = data_mod.load("digits")
    m2 = SSVAE(digits.x_dim, num_classes=10, z_dim=2, hidden_dims=(16,), labels=30)
    budget = study.common.Budget.quick()
    chosen = m2.labelled_indices(digits.y_train)
    blank = torch.zeros_like(digits.x_train)
    blank[chosen] = digits.x_train[chosen]
    trained = [
        study.train_classifier(m2, d, budget, seed=0).state_dict()
        for d in (digits, replace(digits, x_train=blank))
    ]
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    other = study.train_classifier(m2, digits, budget, seed=1).state_dict()
    assert not all(torch.equal(trained[0][k], other[k]) for k in other)


def test_vqvae_experiment(tmp_path, run):
    results = run("vqvae", tmp_path)
    rows = {r["label"]: r for r in results["rows"]}
    assert len(rows) == 6
    for r in rows.values():
        assert r["kl"] == pytest.approx(r["slots"] * math.log(r["codes"]))
        frequencies = r["usage"]["frequencies"]
        assert r["usage"]["dead_codes"] == sum(f == 0 for f in frequencies)
        # k^m <= 4,096 code arrays are summed out, more are importance-sampled
        exact = r["codes"] ** r["slots"] <= 4096
        assert r["method"] == "exact" if exact else r["method"].startswith("IS, K = ")
        assert ("best_code_share" in r) == (r["slots"] == 1)
    assert rows["k = 4, the notes' loss alone"]["terms"] is False
    sample_rows(tmp_path / "samples.png", len(rows), 12, tmp_path)
    redrawn(tmp_path / "codebook.png", experiment_module("vqvae").usage_figure(results), tmp_path)


def test_vqvae_scores_the_best_code_by_brute_force():
    vq = experiment_module("vqvae")
    model = vq.Row("tiny", 5, bernoulli=True).build(6, None, (8,)).eval()
    with torch.no_grad():
        model.quantizer.codebook.normal_()
    x = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0.0]])
    s = vq.score(model, x, num_samples=10, seed=0)
    chosen = model.quantizer.select(model.encode(x))[:, 0]
    best = []
    for i in range(3):
        with torch.no_grad():
            scores = [
                float(model.likelihood(model.decoder(model.quantizer.codebook[j])).log_prob(x[i]))
                for j in range(5)
            ]
        best.append(max(range(5), key=scores.__getitem__))
    expected = sum(int(b == int(c)) for b, c in zip(best, chosen, strict=True)) / 3
    assert s["best_code_share"] == pytest.approx(expected)
    assert s["method"] == "exact"


def test_networks_experiment(tmp_path, run):
    results = run("networks", tmp_path)
    rows = {(r["model"], r["network"]): r for r in results["rows"]}
    assert set(rows) == {(m, n) for m in ("vae", "vqvae") for n in ("mlp", "conv")}
    # the quick sizes counted by hand: 784-32-4 MLPs; the conv encoder adds a 1->32 and a
    # 32->64 3x3 convolution before a 3136-32 layer, the decoder mirrors it
    mlp = 784 * 32 + 32 + 32 * 8 + 8 + 4 * 32 + 32 + 32 * 784 + 784
    conv_encoder = (9 * 32 + 32) + (32 * 9 * 64 + 64) + (3136 * 32 + 32) + (32 * 8 + 8)
    conv_decoder = (4 * 32 + 32) + (32 * 3136 + 3136) + (64 * 9 * 32 + 32) + (32 * 9 + 1)
    assert rows["vae", "mlp"]["parameters"] == mlp
    assert rows["vae", "conv"]["parameters"] == conv_encoder + conv_decoder
    for (_, network), r in rows.items():
        assert ("conv_minus_mlp" in r) == (network == "conv")
    assert results["skipped"] == {}  # a quick run uses mnist5k alone
    sample_rows(tmp_path / "samples.png", len(rows), 10, tmp_path)


#: float32 training and sampling with the same seeds, computed in another order (a
#: fused likelihood, a shorter graph for log q, a fused Adam): every number of the quick
#: runs stays within this of the reference. Measured worst: 1.2e-4 (an effective sample
#: size, the most sensitive number), 3e-5 nats for a log-likelihood; a change of seed or
#: estimator moves them by Monte Carlo error, 1e-2 and more
REFERENCE_ATOL, REFERENCE_RTOL = 5e-4, 5e-5
#: experiments added after the reference was recorded
NEWER_THAN_THE_REFERENCE = {"default_run", "estimators", "priors", "semi_supervised"}
#: the first draws of torch's CPU generators from seed 0 (:func:`rng_fingerprint`) under
#: torch 2.14.1, which recorded the reference
RNG_FINGERPRINT = {
    "randn": [1.5409960746765137, -0.293428897857666, -2.1787893772125244],
    "randn_vectorized": [-0.19383712112903595, 0.44551217555999756, 1.3252748250961304],
    "rand": [0.6965049505233765, 0.9142746925354004, 0.9351036548614502],
    "rand_vectorized": [0.513896107673645, 0.4568655490875244, 0.6011906862258911],
    "randperm": [34, 29, 21, 2, 36],
    "bernoulli": [0, 4, 6, 7, 8],
    "multinomial": [1, 2, 0, 0, 2, 0, 1, 2],
    "generator_randn": [-1.2341350317001343, 1.8197252750396729, -0.5515286922454834],
}


def rng_fingerprint() -> dict[str, list]:
    """First draws of every kind of random stream the quick runs take from torch (the
    global and a seeded generator; element-wise and the vectorized paths of 16 values or
    more; permutations, Bernoulli and categorical draws), seeded with 0. Torch's global
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        return {
            "randn": torch.randn(3).tolist(),
            "randn_vectorized": torch.randn(64)[-3:].tolist(),
            "rand": torch.rand(3).tolist(),
            "rand_vectorized": torch.rand(64)[-3:].tolist(),
            "randperm": torch.randperm(50)[:5].tolist(),
            "bernoulli": torch.bernoulli(torch.full((64,), 0.3)).nonzero()[:5, 0].tolist(),
            "multinomial": torch.multinomial(
                torch.tensor([0.2, 0.3, 0.5]), 8, replacement=True
            ).tolist(),
            "generator_randn": torch.randn(64, generator=gen)[-3:].tolist(),
        }


def other_random_streams() -> list[str]:
    """The kinds of draws in which the installed torch differs from the torch that
    recorded the reference (beyond float rounding)."""
    drawn = rng_fingerprint()
    return [
        name
        for name, values in RNG_FINGERPRINT.items()
        if not np.allclose(drawn[name], values, rtol=1e-5, atol=1e-6)
    ]


def test_quick_results_equal_the_reference_from_before_the_speed_ups(quick_results):
    # tests/fixtures/quick_results.json: every experiment's quick results as they were
    # before the training step and the evaluator were made faster. A speed-up may
    # change rounding, never the numbers: the same seeds draw the same samples.
    # The comparison holds on any torch that draws the same random numbers from the
    # same seeds: a torch with other kernels (no fused Adam on the CPU before 2.4, say)
    # changes rounding only, within the tolerance.
    reference = json.loads((ROOT / "tests" / "fixtures" / "quick_results.json").read_text())
    differ = other_random_streams()
    if differ:
        pytest.skip(
            f"torch {torch.__version__} draws other random numbers ({', '.join(differ)}) "
            f"from the same seeds than torch {reference['torch_version']}, which recorded "
            "the reference: the quick runs cannot repeat its samples"
        )
    mismatches: list[str] = []

    def compare(ref, new, where: str) -> None:
        if isinstance(ref, dict):
            assert isinstance(new, dict) and set(new) >= set(ref), where
            for key, value in ref.items():
                compare(value, new[key], f"{where}/{key}")
        elif isinstance(ref, list):
            assert isinstance(new, list) and len(new) == len(ref), where
            for i, (a, b) in enumerate(zip(ref, new, strict=True)):
                compare(a, b, f"{where}[{i}]")
        elif isinstance(ref, float):
            same = (math.isnan(ref) and math.isnan(new)) or math.isclose(
                new, ref, rel_tol=REFERENCE_RTOL, abs_tol=REFERENCE_ATOL
            )
            if not same:
                mismatches.append(f"{where}: {new!r}, reference {ref!r}")
        elif ref != new:
            mismatches.append(f"{where}: {new!r}, reference {ref!r}")

    produced = {d.name for d in quick_results.iterdir() if (d / "results.json").is_file()}
    assert set(reference["results"]) == produced - NEWER_THAN_THE_REFERENCE
    for name, ref in reference["results"].items():
        compare(ref, untimed(json.loads((quick_results / name / "results.json").read_text())), name)
    assert not mismatches, "\n".join(mismatches[:20])


def test_reproduce_picks_jobs_and_threads_from_the_cores(monkeypatch):
    from pyro_vae.cli import reproduce
    from pyro_vae.errors import UsageError

    # where the process may run on 4 cores (Linux)...
    monkeypatch.setattr(reproduce.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 16)
    assert reproduce.jobs_and_threads(None, None) == (4, 1)  # a job per core
    assert reproduce.jobs_and_threads(None, 2) == (2, 2)
    assert reproduce.jobs_and_threads(None, 3) == (1, 3)
    assert reproduce.jobs_and_threads(2, None) == (2, 2)  # the cores' share of each job
    assert reproduce.jobs_and_threads(3, None) == (3, 1)
    assert reproduce.jobs_and_threads(8, None) == (8, 1)
    assert reproduce.jobs_and_threads(1, 8) == (1, 8)  # as given
    # ...and elsewhere, from the machine's count
    monkeypatch.delattr(reproduce.os, "sched_getaffinity")
    assert reproduce.jobs_and_threads(None, None) == (16, 1)
    assert reproduce.jobs_and_threads(None, 4) == (4, 4)
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: None)  # unknown: one core
    assert reproduce.jobs_and_threads(None, None) == (1, 1)
    with pytest.raises(UsageError, match="--jobs must be at least 1, got 0"):
        reproduce.jobs_and_threads(0, None)
    with pytest.raises(UsageError, match="--threads must be at least 1, got -1"):
        reproduce.jobs_and_threads(None, -1)
