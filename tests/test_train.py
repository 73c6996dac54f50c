import contextlib
import math

import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import VAE, Gaussian, TrainConfig, fit, mean_elbo
from pyro_vae.engine import make_engine
from pyro_vae.errors import TrainingDiverged, UsageError
from pyro_vae.objectives import make_objective, scale_latents


def small_vae():
    return VAE(16, z_dim=2, hidden_dims=(32,))


def test_elbo_rises_on_a_small_problem(toy_binary):
    train, test = toy_binary
    vae = small_vae()
    torch.manual_seed(0)
    before = mean_elbo(vae.model, vae.guide, test, num_particles=10)
    history = fit(
        vae, train, test, config=TrainConfig(epochs=30, batch_size=32, lr=1e-2), progress=False
    )
    torch.manual_seed(0)
    after = mean_elbo(vae.model, vae.guide, test, num_particles=10)
    # 16 fair coins cost 16 log 2 = 11.1 nats; two noisy prototypes cost far less
    assert before < -11.0
    assert after > before + 5.0
    assert after > -7.0
    assert history.test_elbo[-1] > history.test_elbo[0]
    assert history.epoch == list(range(1, 31))


def test_fast_and_svi_engines_compute_the_same_updates(toy_binary):
    train, test = toy_binary
    histories = []
    for engine in ("fast", "svi"):
        vae = small_vae()
        torch.manual_seed(123)
        vae.load_state_dict(small_vae().state_dict())  # same initial weights for both
        cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-2, engine=engine, seed=5)
        histories.append(fit(vae, train, test, config=cfg, progress=False))
    fast, svi = histories
    # Adam is element-wise: one optimizer over all parameters equals one per tensor
    assert fast.train_objective == pytest.approx(svi.train_objective, rel=1e-4)
    assert fast.test_elbo == pytest.approx(svi.test_elbo, rel=1e-4)


def torch_has_fused_adam_on_cpu() -> bool:
    """Whether the installed torch runs ``Adam(fused=True)`` on CPU tensors (from 2.4
    on; before, it refuses them), found by trying it."""
    p = torch.zeros(3, requires_grad=True)
    try:
        optimizer = torch.optim.Adam([p], fused=True)
        p.grad = torch.ones(3)
        optimizer.step()
    except RuntimeError:
        return False
    return True


def test_the_fast_engine_leaves_the_param_store_alone_and_uses_fused_adam(toy_binary):
    import pyro

    from pyro_vae import engine as engine_mod

    train, _ = toy_binary
    pyro.clear_param_store()
    vae = small_vae()
    engine = make_engine(vae, engine="fast", lr=1e-2)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    engine.step((train[:16],), 1.0)
    assert not list(pyro.get_param_store().keys())  # no pyro.module registration
    assert any(not torch.equal(before[k], v) for k, v in vae.state_dict().items())
    state = engine.optimizer_state()
    # the fused kernel wherever the installed torch has one for these CPU tensors
    fused = torch_has_fused_adam_on_cpu()
    assert engine_mod._FUSED_ADAM_ON_CPU is fused
    assert bool(state["param_groups"][0]["fused"]) is fused
    assert engine_mod.adam_options(vae.parameters()) == ({"fused": True} if fused else {})
    # outside the engine the model registers as before, so that SVI finds its parameters
    poutine.trace(vae.guide).get_trace(train[:4])
    assert any(k.startswith(vae.name) for k in pyro.get_param_store().keys())


def _log_probs(vae, x, seed):
    torch.manual_seed(seed)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    lp = {
        n: s["fn"].log_prob(s["value"]).sum().item()
        for n, s in model_tr.nodes.items()
        if n in ("x", "z")
    }
    lp["q"] = guide_tr.nodes["z"]["fn"].log_prob(guide_tr.nodes["z"]["value"]).sum().item()
    return lp


def test_scale_latents_weights_only_the_kl_term():
    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 16), 0.5))
    lp = _log_probs(vae, x, seed=3)
    torch.manual_seed(3)
    loss = Trace_ELBO().differentiable_loss(
        scale_latents(vae.model, 0.25), scale_latents(vae.guide, 0.25), x
    )
    expected = -(lp["x"] + 0.25 * (lp["z"] - lp["q"]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="scale > 0"):
        scale_latents(vae.model, 0.0)


@pytest.mark.parametrize("objective", ["elbo", "mean-field", "iwae"])
@pytest.mark.parametrize("particles", [1, 5])
def test_objectives_with_the_exact_posterior_give_the_exact_log_likelihood(objective, particles):
    """With the true posterior as guide every log weight equals log p(x), so each
    objective is -sum log p(x) exactly: the closed form of a linear-Gaussian model."""
    from linear_gaussian import LinearGaussian

    lg = LinearGaussian()
    x = lg.sample_x(6)
    loss = make_objective(objective, particles).loss(lg.model, lg.exact_guide, x)
    assert loss == pytest.approx(-float(lg.exact_log_px(x).sum()), rel=1e-9)


@pytest.mark.parametrize("objective,particles", [("mean-field", 1), ("iwae", 5), ("elbo", 4)])
def test_every_objective_trains(toy_binary, objective, particles):
    train, test = toy_binary
    cfg = TrainConfig(
        epochs=8, batch_size=32, lr=1e-2, objective=objective, num_particles=particles
    )
    history = fit(small_vae(), train, test, config=cfg, progress=False)
    assert all(math.isfinite(v) for v in history.train_objective)
    assert history.test_elbo[-1] > history.test_elbo[0] + 1.0


def test_kl_warmup_rises_linearly_from_above_zero(toy_binary):
    train, _ = toy_binary
    cfg = TrainConfig(epochs=4, batch_size=32, beta=0.5, kl_warmup=2)
    history = fit(small_vae(), train, config=cfg, progress=False)
    # 6 steps per epoch, 12 warm-up steps: weight at the last step of epoch e is 0.5 * 6e/12
    assert history.kl_weight == pytest.approx([0.25, 0.5, 0.5, 0.5])
    assert all(math.isnan(v) for v in history.test_elbo)  # no test data given


@pytest.mark.parametrize(
    "kwargs,train,message",
    [
        ({"batch_size": 500}, None, "batch_size 500 is larger than the training split"),
        ({"objective": "vi"}, None, "valid names: elbo, mean-field, iwae"),
        ({"objective": "iwae", "beta": 0.5}, None, "IWAE bound has no separate KL term"),
        ({"beta": 0.0}, None, r"beta must be a finite number in \(0, 1000\]"),
        ({}, torch.full((64, 16), 0.5), "bernoulli likelihood needs binary data"),
        ({}, torch.full((64, 16), math.nan), "NaN or infinite"),
    ],
)
def test_bad_settings_and_data_fail_before_training(toy_binary, kwargs, train, message):
    train = toy_binary[0] if train is None else train
    vae = small_vae()
    before = [p.detach().clone() for p in vae.parameters()]
    with pytest.raises(UsageError, match=message):
        fit(
            vae,
            train,
            config=TrainConfig(**{"epochs": 1, "batch_size": 32, **kwargs}),
            progress=False,
        )
    assert all(torch.equal(b, p) for b, p in zip(before, vae.parameters(), strict=True))


@pytest.mark.parametrize("validate", [False, True])
def test_nan_during_training_stops_and_keeps_last_good_checkpoint(toy_binary, tmp_path, validate):
    from pyro_vae import checkpoint

    train, test = (0.1 + 0.8 * x for x in toy_binary)  # grey levels: a density's data
    vae = VAE(16, z_dim=2, hidden_dims=(32,), likelihood=Gaussian(0.5))
    calls = {"n": 0}

    def poison_in_epoch_3(x):  # 6 steps per epoch: call 14 is in epoch 3
        calls["n"] += 1
        if calls["n"] == 14:
            with torch.no_grad():
                vae.decoder[0].weight.fill_(math.nan)
        return x

    path = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=5, batch_size=32, validate=validate)
    diverged = r"diverged in epoch 3: .* last good epoch \(2\)"
    # without validation Pyro warns of the NaN loss of the steps after the poisoning;
    # with it, a distribution's check refuses the first NaN parameter instead
    nan_loss = (
        contextlib.nullcontext()
        if validate
        else pytest.warns(UserWarning, match="Encountered NaN: loss")
    )
    with nan_loss, pytest.raises(TrainingDiverged, match=diverged):
        fit(
            vae,
            train,
            test,
            config=cfg,
            batch_transform=poison_in_epoch_3,
            checkpoint=path,
            progress=False,
        )
    saved = checkpoint.load(path)
    assert saved["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model_state"].values())


@pytest.mark.parametrize("engine", ["fast", "svi"])
def test_engine_step_applies_the_kl_weight(engine):
    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 16), 0.5))
    lp = _log_probs(vae, x, seed=11)
    step = make_engine(vae, engine=engine, lr=1e-12).step
    torch.manual_seed(11)
    loss = step((x,), 0.3).item()
    assert loss == pytest.approx(-(lp["x"] + 0.3 * (lp["z"] - lp["q"])), rel=1e-5)


def test_mean_field_objective_uses_the_analytic_kl_with_beta():
    from torch.distributions import Normal, kl_divergence

    vae = small_vae()
    x = torch.bernoulli(torch.full((6, 16), 0.5))
    lp = _log_probs(vae, x, seed=2)
    loc, scale = vae.encoder(x)
    kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum().item()
    torch.manual_seed(2)
    loss = make_objective("mean-field").differentiable_loss(
        scale_latents(vae.model, 0.5), scale_latents(vae.guide, 0.5), x
    )
    assert loss.item() == pytest.approx(-(lp["x"] - 0.5 * kl), rel=1e-5)


def test_iwae_bound_lies_above_the_elbo():
    vae = small_vae()
    x = torch.bernoulli(torch.full((20, 16), 0.5))
    torch.manual_seed(0)
    elbo = -sum(make_objective("elbo", 50).loss(vae.model, vae.guide, x) for _ in range(5)) / 5
    iwae = -sum(make_objective("iwae", 50).loss(vae.model, vae.guide, x) for _ in range(5)) / 5
    # untrained guide: the IWAE-50 bound is well above the ELBO (Burda et al., theorem 1)
    assert iwae > elbo + 1.0


def test_warmup_weight_starts_above_zero():
    cfg = TrainConfig(beta=0.5, kl_warmup=2)
    assert cfg.kl_weight(0, 6) == pytest.approx(0.5 / 12)
    assert cfg.kl_weight(11, 6) == pytest.approx(0.5)
    assert cfg.kl_weight(100, 6) == pytest.approx(0.5)
    assert TrainConfig(beta=0.5).kl_weight(0, 6) == 0.5


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("kl_warmup", math.nan, "kl_warmup must be a finite number"),
        ("kl_warmup", math.inf, "kl_warmup must be a finite number"),
        ("lr", math.inf, "lr must be a finite number"),
        ("seed", -1, r"seed must be in \[0, 2\*\*32\)"),
        ("engine", "jit", "valid names: fast, svi"),
    ],
)
def test_config_rejects_non_finite_and_out_of_range(field, value, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**{field: value}).check()


def test_resume_refuses_changed_settings_and_missing_checkpoints(toy_binary, tmp_path):
    train, _ = toy_binary
    path = tmp_path / "ckpt.pt"
    fit(
        small_vae(),
        train,
        config=TrainConfig(epochs=1, batch_size=32),
        checkpoint=path,
        progress=False,
    )
    for change, message in (
        ({"engine": "svi"}, "engine='svi' \\(checkpoint has 'fast'\\)"),
        ({"batch_size": 16}, "batch_size=16 \\(checkpoint has 32\\)"),
    ):
        cfg = TrainConfig(**{"epochs": 2, "batch_size": 32, **change})
        with pytest.raises(UsageError, match=message):
            fit(small_vae(), train, config=cfg, checkpoint=path, resume=True, progress=False)
    with pytest.raises(UsageError, match="no checkpoint at"):
        fit(
            small_vae(),
            train,
            config=TrainConfig(batch_size=32),
            checkpoint=tmp_path / "x.pt",
            resume=True,
            progress=False,
        )
    # more epochs is the one change that makes sense
    history = fit(
        small_vae(),
        train,
        config=TrainConfig(epochs=2, batch_size=32),
        checkpoint=path,
        resume=True,
        progress=False,
    )
    assert history.epoch == [1, 2]


def test_batch_transform_per_tensor():
    """A sequence of transforms applies one per data tensor; ``None`` leaves one alone."""
    from pyro_vae.models import Regressor

    seen = []

    class Spy(Regressor):
        def model(self, x, y=None):
            seen.append((x.clone(), y.clone()))
            return super().model(x, y)

    torch.manual_seed(0)
    reg = Spy(3, 4, hidden_dims=(8,))
    x, y = torch.full((20, 3), 0.5), torch.full((20, 4), 0.5)
    config = TrainConfig(epochs=1, batch_size=10)
    fit(reg, (x, y), config=config, batch_transform=(None, torch.bernoulli), progress=False)
    assert len(seen) == 2  # two batches of 10
    for bx, by in seen:
        assert torch.equal(bx, torch.full_like(bx, 0.5))  # X untouched
        assert set(by.unique().tolist()) <= {0.0, 1.0}  # Y binarized
    with pytest.raises(UsageError, match="expected a callable or 2 callables"):
        fit(reg, (x, y), config=config, batch_transform=(torch.bernoulli,), progress=False)


def test_burdas_learning_rate_schedule():
    config = TrainConfig(lr=1e-3, lr_schedule="burda")
    # stage i lasts 3^i epochs: epochs 0 | 1-3 | 4-12 | 13-39 | ... | 1093-3279
    stages = [0, 1, 3, 4, 12, 13, 39, 40, 1092, 1093, 3279, 5000]
    expected = [0, 1, 1, 2, 2, 3, 3, 4, 6, 7, 7, 7]
    for epoch, stage in zip(stages, expected, strict=True):
        assert config.lr_at(epoch) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-12)
    assert sum(3**i for i in range(8)) == 3280  # the paper's total number of passes
    assert TrainConfig(lr=0.01).lr_at(100) == 0.01
    with pytest.raises(UsageError, match="unknown lr_schedule 'cosine'"):
        TrainConfig(lr_schedule="cosine").check()


@pytest.mark.parametrize("engine", ["fast", "svi"])
def test_the_schedule_sets_the_step_size_of_every_epoch(toy_binary, engine, monkeypatch):
    from pyro_vae import engine as engine_mod

    seen, engines = [], []
    make = engine_mod.make_engine

    def recording(*args, **kwargs):
        built = make(*args, **kwargs)
        engines.append(built)
        return built._replace(set_lr=lambda lr: (seen.append(lr), built.set_lr(lr)))

    monkeypatch.setattr("pyro_vae.train.make_engine", recording)
    train, _ = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    config = TrainConfig(epochs=5, batch_size=64, lr=1e-2, lr_schedule="burda", engine=engine)
    fit(vae, train, config=config, progress=False)
    stages = [0, 1, 1, 1, 2]
    assert seen == pytest.approx([1e-2 * 10 ** (-i / 7) for i in stages], rel=1e-12)
    # and the optimizers took it: every parameter's Adam has the last epoch's step size
    state = engines[0].optimizer_state()
    groups = (
        state["param_groups"]
        if engine == "fast"
        else [g for s in state.values() for g in s["param_groups"]]
    )
    assert groups and all(g["lr"] == pytest.approx(seen[-1], rel=1e-12) for g in groups)
