"""Results and reports as plain data and Markdown, without argparse or files.

:func:`training_results` and :func:`training_table` are what ``pyro-vae train`` writes to
``results.json`` and ``results.md``; :func:`evaluation_report` and :func:`exact_report`
what ``pyro-vae evaluate`` writes to ``eval.json``, and :func:`evaluation_table` (from
:mod:`pyro_vae.evaluation_tables`, re-exported here) its ``eval.md``. Each names its
model through the model contract (``describe()``, ``notation``, ``latent``), never by
kind.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from pyro_vae import distributed
from pyro_vae.ais import AISResult, BDMCResult
from pyro_vae.ais_reports import ais_fields, bdmc_fields
from pyro_vae.evaluate import DatasetEvaluation, mean_and_stderr, mean_elbo
from pyro_vae.evaluation_tables import GAP_ROWS, TUTORIAL_ELBO_PARTICLES, evaluation_table
from pyro_vae.tables import escape_cell
from pyro_vae.units import comparable_bits_per_dim

#: particles per data point for the final ELBO table of a training run
FINAL_ELBO_PARTICLES = 10


def _data_fields(model, dataset) -> dict[str, Any]:
    return {
        "model": model.kind,
        "description": model.describe(),
        "target": model.notation.data,
        "notation": model.notation._asdict(),
        # no latent variable: the ELBO is the exact log-likelihood
        "exact": not model.supports("latent"),
        "dataset": dataset.name,
        "binarize": dataset.binarize,
        "dequantized": dataset.dequantized,
        "likelihood": model.likelihood.config(),
    }


@torch.no_grad()
def training_results(model, dataset, train_config, history, data) -> dict[str, Any]:
    """Final train and test ELBO of a trained model, with every setting a reader needs.

    :param model: the trained :class:`~pyro_vae.models.base.Model`.
    :param dataset: the :class:`~pyro_vae.data.Dataset` it was trained on.
    :param train_config: its :class:`~pyro_vae.train.TrainConfig`.
    :param history: its :class:`~pyro_vae.train.History`.
    :param dict data: ``{"train": tensors, "test": tensors}`` as they are scored.
    """
    model.eval()
    # one process draws from the global generator seeded with the run's seed (the numbers
    # pyro_vae always reported), forked so that the caller's random state is left as it
    # was; several draw one stream per batch, so that their shares are independent
    seed = train_config.seed if distributed.world_size() > 1 else None
    devices = distributed.rng_devices(*(t for tensors in data.values() for t in tensors))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(train_config.seed)
        elbo = {
            split: mean_elbo(
                model.model,
                model.guide,
                tensors,
                num_particles=FINAL_ELBO_PARTICLES,
                batch_size=train_config.eval_batch_size,
                max_plate_nesting=model.max_plate_nesting,
                seed=seed,
                enumerate=bool(model.enumerated_sites),
            )
            for split, tensors in data.items()
        }
        diagnostics = model.diagnostics(*data["test"])
    return {
        **_data_fields(model, dataset),
        "model_config": model.config(),
        "diagnostics": diagnostics,
        "split": {"train": len(dataset.x_train), "test": len(dataset.x_test)},
        "epochs": history.epoch[-1] if history.epoch else 0,
        "seed": train_config.seed,
        # data-parallel processes under torchrun, sharing each global batch
        "processes": distributed.world_size(),
        "elbo_particles": FINAL_ELBO_PARTICLES,
        "train_elbo": elbo["train"],
        "test_elbo": elbo["test"],
        "unit": "nats per data point",
        # an upper bound on bits/dim (the ELBO bounds log P from below); None where a
        # continuous density was fitted to data that were not dequantized
        "test_elbo_bits_per_dim": comparable_bits_per_dim(model, dataset, elbo["test"]),
        "train_seconds": sum(history.seconds),
    }


def _bits_kind(r: dict) -> str:
    """Exact only for an exact log-likelihood of discrete data; a dequantized density
    scored on one noise draw bounds the discrete log-likelihood (Theis et al. 2016)."""
    if not r.get("exact"):
        return "an upper bound"
    return "an upper bound, from one dequantization" if r["dequantized"] else "exact"


def _setting(r: dict) -> str:
    lik = ", ".join(f"{k}={v}" for k, v in r["likelihood"].items())
    return f"binarize={r['binarize']}, dequantized={r['dequantized']}), likelihood {lik}"


def training_table(r: dict) -> str:
    """The Markdown table of :func:`training_results`."""
    p = r["target"]
    if r["exact"]:
        what = f"{r['description']}: no latent variable, so the ELBO is the exact log {p}"
        column = escape_cell(f"log {p}, exact")
    else:
        what = f"{r['description']}, ELBO from {r['elbo_particles']} samples of z per data point"
        column = escape_cell(f"ELBO of log {p}")
    bpd = r["test_elbo_bits_per_dim"]
    bits = (
        f"\nTest {'log-likelihood' if r['exact'] else 'ELBO'} as bits per dimension "
        f"({_bits_kind(r)}): {bpd:.4f}\n\n"
        if bpd is not None
        else "\n"
    )
    scalars = {k: v for k, v in (r.get("diagnostics") or {}).items() if isinstance(v, (int, float))}
    shown = (
        "On the test split: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in scalars.items())
        + "\n"
        if scalars
        else ""
    )
    return (
        f"\n{r['dataset']} ({r['split']['train']} train / {r['split']['test']} test points, "
        f"{_setting(r)}, {r['epochs']} epochs, seed {r['seed']}; {what}, one run\n\n"
        f"| split | {column} (nats per data point) |\n"
        "|---|---|\n"
        f"| train | {r['train_elbo']:.2f} |\n"
        f"| test | {r['test_elbo']:.2f} |\n" + bits + shown
    )


def order_violations(guided: DatasetEvaluation) -> list[str]:
    """Pairs of nested estimates that step down for some point: a bug in the estimator.

    With shared samples and k dividing k', Jensen's inequality inside each group makes
    L_k <= L_k' hold for every point, whatever the weights; pairs that do not nest are
    noisy and are not checked.
    """
    rows = {"elbo": guided.elbo, "log_px": guided.log_px}
    rows.update({f"L_{k}": b for k, b in zip(guided.ks, guided.bounds, strict=True)})
    chain = ["elbo", *[f"L_{k}" for k in guided.ks if k > 1], "log_px"]
    sizes = {"elbo": 1, "log_px": guided.num_samples, **{f"L_{k}": k for k in guided.ks}}
    violations = []
    for lower, upper in itertools.combinations(chain, 2):
        k, k_next = sizes[lower], sizes[upper]
        if k_next % k or guided.num_samples % k_next:
            continue
        worst = float((rows[upper] - rows[lower]).min())
        if worst < -1e-4 * (1 + float(rows[lower].abs().max())):
            violations.append(
                f"{upper} is below {lower} by {-worst:.4g} nats for some point, which nested "
                "groups of shared samples rule out: a bug in the estimator"
            )
    return violations


def evaluation_report(
    model,
    dataset,
    settings: dict[str, Any],
    guided: DatasetEvaluation | None,
    naive: DatasetEvaluation | None,
    gaps=None,
    negative_elbo: float | None = None,
    exact: torch.Tensor | None = None,
    ais: AISResult | None = None,
    bdmc: BDMCResult | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Plain-data report of ``pyro-vae evaluate``: settings, summary rows, the ordering
    check and per-point values.

    :param dict settings: ``run``, ``split``, ``seed`` and anything else to record.
    :param guided: :func:`~pyro_vae.evaluate.evaluate_dataset` with the guide as proposal,
        or ``None`` where only AIS ran (then ``ais`` is required and ``num_samples`` is
        ``None``).
    :param naive: the same with the prior as proposal (the naive estimator, at a K of
        its own), or ``None`` where it was skipped: then ``num_samples_prior`` is ``None``
        and no ``log_px_prior`` or ``ess_prior`` entries are written.
    :param gaps: a :class:`~pyro_vae.gaps.GapDecomposition`, or ``None``.
    :param negative_elbo: the negative ELBO from fresh particles through ``Trace_ELBO``.
    :param exact: ``(N,)`` exact ``log P`` of a latent model that can sum its latents
        out, or ``None``.
    :param ais: :func:`~pyro_vae.ais.ais_dataset` on the same points, or ``None``.
    :param bdmc: :func:`~pyro_vae.ais.bdmc_dataset` on simulated points, or ``None``.
    :param dict seconds: wall times of the ``"ais"`` and ``"bdmc"`` passes.
    """
    seconds = seconds or {}
    if guided is None:
        report = _ais_only_report(model, dataset, settings, ais, negative_elbo)
    else:
        report = _is_report(model, dataset, settings, guided, naive, negative_elbo)
    estimate = ais.log_px if guided is None else guided.log_px
    if ais is not None:
        section, per_point = ais_fields(
            ais, None if guided is None else guided.log_px, seconds.get("ais")
        )
        report.update(section)
        report["per_point"].update(per_point)
    if bdmc is not None:
        report.update(bdmc_fields(bdmc, seconds.get("bdmc")))
    if exact is not None:
        exact = exact.detach().cpu()
        report["summary"]["log_px_exact"] = mean_and_stderr(exact)
        # the estimate against the exact value, paired per point
        report["log_px_minus_exact"] = mean_and_stderr(estimate - exact)
        report["per_point"]["log_px_exact"] = exact.tolist()
    if gaps is not None:
        report["gap_decomposition"] = {
            "num_points": len(gaps.log_px),
            "steps": gaps.steps,
            "num_samples": gaps.num_samples,
            **{name: mean_and_stderr(getattr(gaps, name)) for name, _ in GAP_ROWS},
        }
    return report


def _ais_only_report(model, dataset, settings, ais, negative_elbo) -> dict[str, Any]:
    if ais is None:
        raise ValueError("an evaluation report needs importance sampling, AIS or both")
    return {
        **settings,
        **_data_fields(model, dataset),
        "num_points": len(ais.log_px),
        "num_samples": None,  # no importance sampling
        "num_samples_prior": None,
        "ks": [],
        "repeats": 1,
        "unit": "nats per data point",
        "summary": {},
        "negative_elbo_10_particles": negative_elbo,
        "bits_per_dim": {
            "log_px_ais": comparable_bits_per_dim(model, dataset, float(ais.log_px.mean()))
        },
        "order_violations": [],
        "proposal_note": model.proposal_note,
        "per_point": {},
    }


def _is_report(model, dataset, settings, guided, naive, negative_elbo) -> dict[str, Any]:
    summary = guided.summary()
    per_point_prior = {}
    if naive is not None:
        summary["log_px_prior"] = mean_and_stderr(naive.log_px)
        summary["ess_prior"] = {**mean_and_stderr(naive.ess), "min": float(naive.ess.min())}
        per_point_prior = {"log_px_prior": naive.log_px}
    rows = {"elbo": guided.elbo, "log_px": guided.log_px}
    rows.update({f"L_{k}": b for k, b in zip(guided.ks, guided.bounds, strict=True)})
    report = {
        **settings,
        **_data_fields(model, dataset),
        "num_points": len(guided.log_px),
        "num_samples": guided.num_samples,
        # K of the naive pass, z from the prior; None: skipped, no *_prior entries
        "num_samples_prior": None if naive is None else naive.num_samples,
        "ks": list(guided.ks),
        "repeats": 1,
        "unit": "nats per data point",
        "summary": summary,
        # paired with the ELBO, per point: the uncertainty of the rise itself
        "minus_elbo": {
            name: mean_and_stderr(values - guided.elbo)
            for name, values in rows.items()
            if name not in ("elbo", "L_1")  # L_1 is the ELBO itself
        },
        "negative_elbo_10_particles": negative_elbo,
        "bits_per_dim": {
            name: comparable_bits_per_dim(model, dataset, summary[name]["mean"])
            for name in ("elbo", "log_px", "log_px_prior")
            if name in summary
        },
        "order_violations": order_violations(guided),
        "proposal_note": model.proposal_note,
        "per_point": {
            name: values.tolist()
            for name, values in {**rows, "ess": guided.ess, **per_point_prior}.items()
        },
    }
    if guided.khat is not None:
        report["per_point"]["khat"] = guided.khat.tolist()
    return report


def exact_report(model, dataset, settings: dict[str, Any], log_p: torch.Tensor) -> dict:
    """Report of a model without latent variables: its exact log-likelihood per point."""
    summary = mean_and_stderr(log_p)
    return {
        **settings,
        **_data_fields(model, dataset),
        "num_points": len(log_p),
        "unit": "nats per data point",
        "summary": {"log_px": summary},
        "bits_per_dim": {"log_px": comparable_bits_per_dim(model, dataset, summary["mean"])},
        "per_point": {"log_px": log_p.tolist()},
    }


__all__ = [
    "FINAL_ELBO_PARTICLES",
    "GAP_ROWS",
    "TUTORIAL_ELBO_PARTICLES",
    "evaluation_report",
    "evaluation_table",
    "exact_report",
    "order_violations",
    "training_results",
    "training_table",
]
