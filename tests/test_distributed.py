"""Several processes: ``torchrun`` with 2 gloo processes on the CPU, tiny budgets.

The torchrun tests start ``python -m torch.distributed.run --standalone`` (torchrun, on a
free port) as a subprocess. The rest run in this process: the shares, the per-point
random streams and the launcher checks, which need no process group.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import RenyiELBO

from pyro_vae import VAE, checkpoint, distributed
from pyro_vae.cli import main
from pyro_vae.errors import UnreliableWeights
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.gaps import GAP_BLOCK, decompose_gap
from pyro_vae.objectives import DifferentiableRenyiELBO
from pyro_vae.run import open_run

#: a run on scikit-learn's digits small enough for a few seconds per process
SMALL = ["--dataset", "digits", "--hidden-dims", "32", "--z-dim", "2", "--no-progress"]
#: how far the test-ELBO curves of one and two processes may part. Same seed, so same
#: initial weights; they differ in the data order and the samples of z. Late in
#: training the test ELBO gains about 0.2 nats per epoch, so 0.75 nats is a few epochs
#: of progress (measured: at most 0.2; runs with another seed, which also start from
#: other weights, part by up to 1.5).
CURVE_TOLERANCE = 0.75
#: distributed.stream_seed(0, "guide", 0), computed once; it must never change
STREAM_SEED_0_GUIDE_0 = 3357675468267648655
#: seconds within which every rank must be gone after one was killed
FAULT_DEADLINE_S = 60


def torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m pyro_vae ARGS``, finished."""
    return subprocess.run(
        _command(args, nproc), capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _command(args, nproc: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(nproc), "-m", "pyro_vae", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _workers(parent: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes that torchrun ``parent`` started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def _one_error_line(stderr: str, message: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("pyro-vae: error:")]
    assert len(lines) == 1 and message in lines[0], stderr[-2000:]


# --- in one process -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(10, 2), (7, 3), (2, 4), (0, 2)])
def test_shares_cover_every_point_once_in_order(monkeypatch, n, size):
    monkeypatch.setattr(distributed, "world_size", lambda: size)
    shares = []
    for r in range(size):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(list(distributed.shard(n)))
    assert [i for share in shares for i in share] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_stream_seeds_are_fixed_distinct_and_fit_torch():
    seeds = {
        distributed.stream_seed(seed, purpose, index)
        for seed in (0, 1, 2**32 - 1)
        for purpose in ("guide", "prior")
        for index in range(50)
    }
    assert len(seeds) == 300 and max(seeds) < 2**63
    # fixed across processes, machines and versions: a changed hash would change every
    # evaluation (the value is SeedSequence([0, *b"guide", 0]) folded to 63 bits)
    assert distributed.stream_seed(0, "guide", 0) == STREAM_SEED_0_GUIDE_0
    torch.manual_seed(max(seeds))  # accepted


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_differentiable_renyi_loss_has_pyros_value_and_gradient(toy_binary, alpha):
    x, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    kwargs = dict(alpha=alpha, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    loss = DifferentiableRenyiELBO(**kwargs).differentiable_loss(vae.model, vae.guide, x[:20])
    loss.backward()
    ours = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(3)  # the same draws
    value = RenyiELBO(**kwargs).loss_and_grads(vae.model, vae.guide, x[:20])
    assert float(loss.detach()) == pytest.approx(value, rel=1e-6)
    for mine, pyros in zip(ours, (p.grad for p in vae.parameters()), strict=True):
        torch.testing.assert_close(mine, pyros, rtol=1e-5, atol=1e-6)


def test_renyi_loss_follows_pyro_for_a_guide_without_reparameterization():
    import pyro.distributions as dist

    data = torch.tensor([0.2, 1.4, -0.3, 0.9])
    probs = torch.tensor(0.4, requires_grad=True)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(2 * z, 1.0), obs=x)

    def guide(x):
        pyro.param("q", probs)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(probs))

    grads = []
    for elbo_class in (DifferentiableRenyiELBO, RenyiELBO):
        pyro.set_rng_seed(1)
        probs.grad = None
        elbo = elbo_class(alpha=0.5, num_particles=20, vectorize_particles=True)
        if elbo_class is RenyiELBO:
            elbo.loss_and_grads(model, guide, data)
        else:
            elbo.differentiable_loss(model, guide, data).backward()
        grads.append(probs.grad.clone())
    assert grads[0].abs() > 0  # the score-function term reaches the guide
    torch.testing.assert_close(grads[0], grads[1])


def test_a_points_estimates_do_not_depend_on_the_other_points(toy_binary):
    x, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    kwargs = dict(num_samples=64, ks=(1, 8), seed=11)
    state = torch.get_rng_state()
    # untrained weights: many points' importance weights are heavy-tailed, and every
    # evaluation here says so
    heavy = r"the Pareto k-hat of the importance weights is above 0\.7 for \d+% of the"
    with pytest.warns(UnreliableWeights, match=heavy + " 12 points"):
        whole = evaluate_dataset(vae.model, vae.guide, x[:12], **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched
    # point i draws from stream (seed, "guide", i), whatever else is evaluated with it
    with pytest.warns(UnreliableWeights, match=heavy + " 8 points"):
        again = evaluate_dataset(vae.model, vae.guide, x[:8], **kwargs)
    torch.testing.assert_close(again.log_px, whole.log_px[:8], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(again.bounds, whole.bounds[:, :8], rtol=1e-6, atol=1e-5)
    with pytest.warns(UnreliableWeights, match=heavy + " 8 points"):
        other = evaluate_dataset(vae.model, vae.guide, x[:8], **{**kwargs, "seed": 12})
    assert not torch.allclose(other.log_px, again.log_px)


def test_gap_fits_do_not_depend_on_the_blocks_after_them(toy_binary):
    x, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    kwargs = dict(steps=20, num_samples=50, seed=5)
    first = decompose_gap(vae, x[:GAP_BLOCK], **kwargs)
    more = decompose_gap(vae, x[: GAP_BLOCK + 7], **kwargs)
    for name in ("log_px", "elbo_amortized", "elbo_optimal"):
        torch.testing.assert_close(
            getattr(more, name)[:GAP_BLOCK], getattr(first, name), rtol=1e-6, atol=1e-5
        )


def test_an_empty_share_scores_zero_with_zero_gradients(toy_binary):
    from pyro_vae.engine import Objective
    from pyro_vae.objectives import make_objective

    x, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    loss = Objective(vae, make_objective("elbo"))((x[:0],), 1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in vae.parameters())


@pytest.fixture
def launched_by_torchrun(monkeypatch):
    """The environment torchrun gives rank 0 of 2, without a process group."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batch-size", "129"], "does not divide among 2 processes; use --batch-size"),
        (["train", "--batch-size", "1"], "smaller than the 2 processes"),
        (["sample", "--run", "x"], "only train and evaluate run under torchrun"),
        (["complete", "--run", "x"], "only train and evaluate run under torchrun"),
    ],
)
def test_bad_launch_settings_exit_2_before_joining_a_group(
    launched_by_torchrun, capsys, args, message
):
    assert main(args) == 2  # no rank waits: refused before init_process_group
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_nccl_without_gpus_exits_2(launched_by_torchrun, capsys, tmp_path):
    assert main(["train", *SMALL, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available on this machine, so the nccl backend" in capsys.readouterr().err


def test_a_rank_other_than_0_prints_no_shared_error(launched_by_torchrun, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--batch-size", "129"]) == 2
    assert capsys.readouterr().err == ""


# --- under torchrun --------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A 20-epoch run of 2 processes, untouched by the tests (they copy it)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = torchrun("train", *SMALL, "--epochs", "20", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_processes_write_a_run_that_trains_like_one(two_process_run, tmp_path):
    names = {p.name for p in two_process_run.iterdir()}
    assert {"config.json", "checkpoint.pt", "history.json", "results.json"} <= names
    assert {"loss.png", "samples.png", "reconstructions.png"} <= names
    state = checkpoint.load(two_process_run / "checkpoint.pt")
    assert state["epoch"] == 20 and state["distributed"]["world_size"] == 2
    assert len(state["distributed"]["rng"]) == 2
    assert main(["train", *SMALL, "--epochs", "20", "--out", str(tmp_path / "one")]) == 0
    two, one = _history(two_process_run), _history(tmp_path / "one")
    gap = np.abs(np.array(two["test_elbo"]) - np.array(one["test_elbo"]))
    assert gap.max() < CURVE_TOLERANCE, gap
    assert two["test_elbo"][-1] > two["test_elbo"][0] + 5  # it learned


def test_a_killed_rank_ends_the_job_and_resume_repeats_the_run(two_process_run, tmp_path):
    out = tmp_path / "run"
    args = ["train", *SMALL, "--epochs", "20", "--out", str(out)]
    proc = subprocess.Popen(
        _command(args, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").is_file():  # the first epoch is done
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.02)
        workers = _workers(proc.pid)
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        proc.communicate(timeout=FAULT_DEADLINE_S)
        assert time.monotonic() - killed < FAULT_DEADLINE_S
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert not any(_alive(pid) for pid in workers.values())  # no rank left behind
    stopped_at = checkpoint.load(out / "checkpoint.pt")["epoch"]
    assert 1 <= stopped_at < 20
    resumed = torchrun("train", "--out", str(out), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the same final state as the run that was never interrupted, draw for draw
    final = checkpoint.load(out / "checkpoint.pt")
    reference = checkpoint.load(two_process_run / "checkpoint.pt")
    for key, value in reference["model_state"].items():
        torch.testing.assert_close(final["model_state"][key], value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        _history(out)["test_elbo"], _history(two_process_run)["test_elbo"], rtol=1e-6
    )


@pytest.mark.filterwarnings("always:resuming a run trained with 2:pyro_vae.errors.RunWarning")
def test_resuming_with_another_number_of_processes_says_what_changes(
    two_process_run, tmp_path, capsys
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_process_run, run)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "21", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: resuming a run trained with 2 process(es) on 1" in err
    assert _history(run)["epoch"] == list(range(1, 22))


@pytest.mark.parametrize(
    "variant",
    [
        ["--engine", "svi"],
        ["--objective", "iwae", "--num-particles", "3"],
        ["--model", "cvae", "--task", "quadrants-2", "--kl-warmup", "1", "--beta", "0.5"],
        # the VampPrior runs the encoder in the model as well as in the guide; rank 0
        # alone writes the TensorBoard events
        ["--prior", "vamp", "--prior-components", "4", "--prior-init", "data", "--tensorboard"],
        # TraceEnum_ELBO through DDP: the classes of the hidden labels enumerated
        ["--model", "ssvae", "--labels", "20"],
    ],
)
def test_engines_and_objectives_train_under_torchrun(tmp_path, variant):
    out = tmp_path / "run"
    proc = torchrun("train", *SMALL, "--epochs", "2", *variant, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    elbo = _history(out)["test_elbo"]
    assert all(math.isfinite(v) for v in elbo) and elbo[1] > elbo[0]
    if "--tensorboard" in variant:  # one writer: one event file
        assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_rank_with_an_empty_share_of_the_last_batch_still_steps(tmp_path):
    # 41 training images in batches of 8: the last batch has 1 image, and rank 1 none
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(50, 64, generator=gen).numpy()  # grey levels in [0, 1]
    np.savez(tmp_path / "tiny.npz", x_train=images[:41], x_test=images[41:])
    out = tmp_path / "run"
    args = [*SMALL, "--dataset", f"npz:{tmp_path / 'tiny.npz'}", "--batch-size", "8"]
    proc = torchrun("train", *args, "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(math.isfinite(v) for v in _history(out)["train_objective"])


def test_vq_moving_averages_count_every_ranks_points(tmp_path):
    # 41 training images in batches of 8: six steps per epoch, the last of one image,
    # which leaves rank 1 empty-handed; it must still join the codebook's sums
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(50, 64, generator=gen).numpy()
    np.savez(tmp_path / "tiny.npz", x_train=images[:41], x_test=images[41:])
    out, decay, codes = tmp_path / "run", 0.9, 4
    args = ["--dataset", f"npz:{tmp_path / 'tiny.npz'}", "--batch-size", "8", "--no-progress"]
    vq = ["--model", "vqvae", "--vq-codes", str(codes), "--vq-ema", str(decay)]
    proc = torchrun("train", *args, *vq, "--hidden-dims", "16", "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = checkpoint.load(out / "checkpoint.pt")["model_state"]
    # the counts start at one per code and decay each step towards the step's number of
    # points summed over both ranks (one process would count its own share alone)
    expected = float(codes)
    for n in [8, 8, 8, 8, 8, 1] * 2:
        expected = decay * expected + (1 - decay) * n
    assert float(state["quantizer.ema_counts"].sum()) == pytest.approx(expected, rel=1e-5)


def test_two_processes_evaluate_like_one_in_the_same_order(two_process_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_process_run, run)
    args = ["--num-samples", "100", "--ks", "1,10", "--limit", "41", "--seed", "3"]
    gaps = ["--gap-decomposition", "--gap-points", "30", "--gap-steps", "10"]
    # AIS beside IS, and BDMC on 5 simulated points (3 on rank 0, 2 on rank 1)
    gaps += ["--method", "both", "--ais-steps", "15", "--ais-chains", "3", "--leapfrog-steps", "2"]
    gaps += ["--bdmc", "5"]
    proc = torchrun("evaluate", "--run-dir", str(run), *args, *gaps, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((run / "eval_n41.json").read_text())
    assert main(["evaluate", "--run", str(run), *args, *gaps, "--no-progress", "--force"]) == 0
    one = json.loads((run / "eval_n41.json").read_text())
    for key, values in one["per_point"].items():
        np.testing.assert_allclose(two["per_point"][key], values, rtol=1e-5, err_msg=key)
    for key in ("log_px", "elbo_amortized", "elbo_optimal"):
        assert two["gap_decomposition"][key]["mean"] == pytest.approx(
            one["gap_decomposition"][key]["mean"], rel=1e-5
        )
    for key, values in one["bdmc"]["per_point"].items():
        np.testing.assert_allclose(two["bdmc"]["per_point"][key], values, rtol=1e-5, err_msg=key)
    assert len(two["per_point"]["log_px_ais"]) == 41
    assert two["negative_elbo_10_particles"] == pytest.approx(
        one["negative_elbo_10_particles"], rel=1e-5
    )
    # and both match the library called from Python on the same points
    model, dataset, _, _ = open_run(run)
    (x,) = model.evaluation_data(dataset, "test")
    from pyro_vae.splits import spread_subset

    ev = evaluate_dataset(
        model.model, model.guide, x[spread_subset(len(x), 41)], num_samples=100, ks=(1, 10), seed=3
    )
    np.testing.assert_allclose(two["per_point"]["log_px"], ev.log_px.tolist(), rtol=1e-5)


def test_a_held_run_folder_is_refused_by_rank_0_for_every_rank_with_one_line(tmp_path):
    from pyro_vae import locks

    with locks.hold(tmp_path / "r", "pyro-vae evaluate"):
        proc = torchrun("train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    _one_error_line(proc.stderr, f"is in use by process {os.getpid()} (pyro-vae evaluate")
    assert "exitcode  : 2" in proc.stderr and "exitcode  : 0" not in proc.stderr
    assert not list((tmp_path / "r").iterdir())  # nothing written


def test_a_batch_the_processes_cannot_share_fails_on_every_rank_with_one_line(tmp_path):
    proc = torchrun("train", *SMALL, "--batch-size", "129", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    _one_error_line(proc.stderr, "--batch-size 129 (the global batch) does not divide among 2")
    # torchrun's report: the rank it saw first exited 2 (it may stop the other first)
    assert "exitcode  : 2" in proc.stderr and "exitcode  : 0" not in proc.stderr
    assert not (tmp_path / "r").exists()
