import pytest
import torch

from pyro_vae import VAE, TrainConfig, checkpoint, fit, mean_elbo
from pyro_vae.errors import UsageError
from pyro_vae.io import write_atomic, write_text


def test_round_trip_gives_the_same_test_elbo(toy_binary, tmp_path):
    train, test = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    path = tmp_path / "ckpt.pt"
    fit(
        vae,
        train,
        test,
        config=TrainConfig(epochs=3, batch_size=32),
        checkpoint=path,
        run_config={"model": vae.config()},
        progress=False,
    )
    state = checkpoint.load(path)
    clone = VAE.from_config(state["config"]["model"])
    checkpoint.load_model_state(clone, state["model_state"], str(path))
    torch.manual_seed(9)
    original = mean_elbo(vae.model, vae.guide, test, num_particles=5)
    torch.manual_seed(9)
    restored = mean_elbo(clone.model, clone.guide, test, num_particles=5)
    assert restored == original
    assert state["epoch"] == 3 and len(state["history"]["epoch"]) == 3


@pytest.mark.parametrize("engine", ["fast", "svi"])
def test_resumed_run_reproduces_the_uninterrupted_one(toy_binary, tmp_path, engine):
    train, test = toy_binary
    init = VAE(16, z_dim=2, hidden_dims=(32,)).state_dict()

    def run(epochs, resume, path):
        vae = VAE(16, z_dim=2, hidden_dims=(32,))
        vae.load_state_dict(init)
        cfg = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, engine=engine, seed=4)
        return fit(vae, train, test, config=cfg, checkpoint=path, resume=resume, progress=False)

    full = run(4, False, tmp_path / "full.pt")
    run(2, False, tmp_path / "part.pt")
    resumed = run(4, True, tmp_path / "part.pt")
    assert resumed.epoch == full.epoch == [1, 2, 3, 4]
    assert resumed.train_objective == pytest.approx(full.train_objective, rel=1e-6, abs=0)
    assert resumed.test_elbo == pytest.approx(full.test_elbo, rel=1e-6, abs=0)


def test_architecture_mismatch_names_the_parameters(toy_binary, tmp_path):
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    other = VAE(16, z_dim=3, hidden_dims=(32,))
    with pytest.raises(
        UsageError, match=r"encoder\.net\.2\.weight: checkpoint \(4, 32\) vs model \(6, 32\)"
    ):
        checkpoint.load_model_state(other, vae.state_dict(), "run-a")
    partial = {k: v for k, v in vae.state_dict().items() if k != "decoder.2.bias"}
    with pytest.raises(UsageError, match=r"decoder\.2\.bias: missing from checkpoint"):
        checkpoint.load_model_state(vae, partial, "run-a")
    with pytest.raises(UsageError, match=r"and \d+ more"):
        checkpoint.load_model_state(
            VAE(16, z_dim=2, hidden_dims=(32, 8)), vae.state_dict(), "run-a"
        )


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    with pytest.raises(UsageError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "absent.pt")


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path):
    path = write_text(tmp_path / "out.json", "old")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_checkpoint_from_plain_fit_can_be_loaded_as_a_run(toy_binary, tmp_path):
    from pyro_vae.run import load_model, open_run

    train, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    fit(
        vae,
        train,
        config=TrainConfig(epochs=1, batch_size=32),
        checkpoint=tmp_path / "checkpoint.pt",
        progress=False,
    )
    clone = load_model(tmp_path)
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["config"]["model"] == vae.config() == clone.config()
    assert state["config"]["train"]["batch_size"] == 32
    with pytest.raises(UsageError, match="records no data set"):  # a model, but no data
        open_run(tmp_path)
    for a, b in zip(clone.state_dict().values(), vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
