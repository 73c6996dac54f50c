"""The parts of ``pyro-vae evaluate``'s report that come from annealed importance sampling,
bidirectional Monte Carlo and the Pareto k-hat, as plain data and Markdown lines.

:mod:`pyro_vae.reports` builds the report and its table and calls these for the
sections they own; like it, they take results and return data, without files.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pyro_vae.ais import TARGET_ACCEPT, AISResult, BDMCResult
from pyro_vae.evaluate import mean_and_stderr
from pyro_vae.tables import escape_cell


def _settings(result: AISResult) -> dict[str, Any]:
    return {
        "num_steps": result.num_steps,
        "num_chains": result.num_chains,
        "leapfrog_steps": result.leapfrog_steps,
        "init": result.init,
        "schedule": result.schedule,
    }


def ais_fields(
    result: AISResult, is_log_px: torch.Tensor | None, seconds: float | None = None
) -> tuple[dict[str, Any], dict[str, list]]:
    """``({"ais": summary}, per-point lists)`` for the report of an AIS pass.

    :param result: :func:`~pyro_vae.ais.ais_dataset` on the evaluated points.
    :param is_log_px: ``(N,)`` the importance-sampled ``log P`` of the same points, for
        the paired difference AIS - IS; ``None`` where IS did not run.
    :param float seconds: wall time of the pass, for the time per point.
    """
    n = len(result.log_px)
    section = {
        **_settings(result),
        "log_px": mean_and_stderr(result.log_px),
        # positive where AIS finds more of P than IS: IS's bias, up to both noises
        "minus_is": None if is_log_px is None else mean_and_stderr(result.log_px - is_log_px),
        "acceptance": mean_and_stderr(result.acceptance),
        "target_acceptance": TARGET_ACCEPT,
        "step_size": {
            "mean": float(result.step_size.mean()),
            "min": float(result.step_size.min()),
            "max": float(result.step_size.max()),
        },
        "seconds": seconds,
        "seconds_per_point": None if seconds is None else seconds / n,
    }
    per_point = {
        "log_px_ais": result.log_px.tolist(),
        "ais_acceptance": result.acceptance.tolist(),
    }
    return {"ais": section}, per_point


def bdmc_fields(result: BDMCResult, seconds: float | None = None) -> dict[str, Any]:
    """``{"bdmc": ...}``: the sandwich on simulated data, summarized and per point."""
    width = result.width
    return {
        "bdmc": {
            **_settings(result.forward),
            "num_points": len(width),
            "lower": mean_and_stderr(result.lower),
            "upper": mean_and_stderr(result.upper),
            "width": {**mean_and_stderr(width), "max": float(width.max())},
            "acceptance_forward": float(result.forward.acceptance.mean()),
            "acceptance_reverse": float(result.reverse_acceptance.mean()),
            "seconds": seconds,
            "per_point": {"lower": result.lower.tolist(), "upper": result.upper.tolist()},
        }
    }


def _describe(a: dict, n: dict) -> str:
    start = n["guide"] if a["init"] == "guide" else f"the prior {n['prior']}"
    return (
        f"AIS from {start}, T = {a['num_steps']}, C = {a['num_chains']}, L = {a['leapfrog_steps']}"
    )


def ais_rows(r: dict[str, Any], row) -> list[str]:
    """The table rows of the AIS estimate and, beside IS, their paired difference.

    :param row: ``row(label, {"mean", "stderr"})`` -> one Markdown row.
    """
    a = r.get("ais")
    if not a:
        return []
    p = r["target"]
    rows = [row(f"log {p}, {_describe(a, r['notation'])}", a["log_px"])]
    if a.get("minus_is"):
        rows.append(row(f"AIS - IS, log {p} paired per point", a["minus_is"]))
    return rows


def ais_lines(r: dict[str, Any]) -> list[str]:
    """What the table says under the rows about the AIS chains."""
    a = r.get("ais")
    if not a:
        return []
    acc, step = a["acceptance"], a["step_size"]
    time = (
        f" {a['seconds_per_point']:.2f} s per point."
        if a.get("seconds_per_point") is not None
        else ""
    )
    lines = [
        f"\nAIS ({a['schedule']} schedule): HMC acceptance {acc['mean']:.2f} on average "
        f"(step sizes adapted per point towards {a['target_acceptance']}; at the end "
        f"{step['min']:.3g} to {step['max']:.3g}).{time} AIS is a stochastic lower bound "
        "of the log-likelihood that tightens as T grows, whatever the initial "
        "distribution.\n"
    ]
    d = a.get("minus_is")
    if d:
        if d["mean"] > 2 * d["stderr"]:
            verdict = (
                "AIS is above IS: the importance-sampled estimate is biased low by at least "
                "about this much"
            )
        elif d["mean"] < -2 * d["stderr"]:
            verdict = (
                "AIS is below IS: too few steps for AIS to check IS (raise --ais-steps; "
                "--bdmc shows how many the model needs)"
            )
        else:
            verdict = "AIS and IS agree within two standard errors"
        lines.append(
            f"\nAIS - IS per point: {d['mean']:.3f} ± {d['stderr']:.3f} nats; {verdict}.\n"
        )
    return lines


def khat_lines(r: dict[str, Any]) -> list[str]:
    """The share of points whose importance weights are unreliable, by Pareto k-hat."""
    k = (r.get("summary") or {}).get("khat")
    if not k:
        return []
    if k["not_fitted"] == r["num_points"]:
        return [
            f"\nPareto k-hat: not fitted; K = {r['num_samples']} weights per point are too few.\n"
        ]
    share = k["share_unreliable"]
    spread = (
        f"mean {k['mean']:.2f}, max {k['max']:.2f}"
        if k["mean"] is not None and math.isfinite(k["mean"])
        else "every point's weights are equal"
    )
    return [
        f"\nPareto k-hat of each point's K weights (Vehtari et al.): {spread}; "
        f"{share:.0%} of points above {k['threshold']}, where the "
        f"importance-sampled log {r['target']} is unreliable at any practical K"
        + (" (see AIS above)" if r.get("ais") else "")
        + ".\n"
    ]


def bdmc_lines(r: dict[str, Any]) -> list[str]:
    """The BDMC section: bounds and width on simulated data."""
    b = r.get("bdmc")
    if not b:
        return []

    def cell(v: dict) -> str:
        return f"{v['mean']:.2f} | {v['stderr']:.2f}"

    p = escape_cell(r["target"])
    return [
        f"\nBidirectional Monte Carlo on {b['num_points']} points simulated from the model "
        f"({_describe(b, r['notation'])}; reverse chains from the latents that made each "
        "point):\n\n",
        "| quantity | mean | std. error |\n|---|---|---|\n",
        f"| lower bound, forward AIS, log {p} | {cell(b['lower'])} |\n",
        f"| upper bound, reverse AIS, log {p} | {cell(b['upper'])} |\n",
        f"| width upper - lower | {cell(b['width'])} |\n",
        f"\nThe largest width is {b['width']['max']:.3f} nats. Where the width is small, "
        f"AIS with these settings is that close to log {r['target']} on data like the "
        "model's own; on real data the lower bound alone is available.\n",
    ]
