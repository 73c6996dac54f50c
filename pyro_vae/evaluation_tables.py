"""The Markdown tables of ``pyro-vae evaluate`` (``eval.md``), from the plain-data reports
of :mod:`pyro_vae.reports` (``eval.json``).

The tables read nothing but the report, so that a report written by an earlier version
still renders; the AIS and BDMC parts come from :mod:`pyro_vae.ais_reports`.
"""

from __future__ import annotations

import math
from typing import Any

from pyro_vae.ais_reports import ais_lines, ais_rows, bdmc_lines, khat_lines
from pyro_vae.tables import escape_cell

#: particles of the negative ELBO that Pyro's CVAE tutorial reports as its metric
TUTORIAL_ELBO_PARTICLES = 10
#: the gap decomposition's per-point quantities, with their table labels
GAP_ROWS = (
    ("log_px", "log P(X)"),
    ("elbo_amortized", "ELBO of the encoder's q"),
    ("elbo_optimal", "ELBO of the per-image optimum q*"),
    ("approximation_gap", "approximation gap log P(X) - ELBO[q*]"),
    ("amortization_gap", "amortization gap ELBO[q*] - ELBO[q]"),
)


def _head(r: dict, what: str) -> str:
    return (
        f"\n{r['description']}; {r['dataset']}, {r['split']} split ({r['num_points']} points, "
        f"binarize={r['binarize']}), {what}; nats per data point, standard errors over "
        "points\n\n| quantity | mean | std. error |\n|---|---|---|\n"
    )


def _row(label: str, value: dict) -> str:
    return f"| {escape_cell(label)} | {value['mean']:.2f} | {value['stderr']:.2f} |\n"


def evaluation_table(r: dict[str, Any]) -> str:
    """The Markdown table that ``evaluate`` prints and writes to ``eval.md``."""
    s, p = r["summary"], r["target"]
    bits = (r.get("bits_per_dim") or {}).get("log_px")
    if r["exact"]:
        lines = [
            _head(r, f"no latent variable, so log {p} is exact"),
            _row(f"log {p}, exact", s["log_px"]),
        ]
        if bits is not None:
            kind = " (an upper bound, from one dequantization)" if r["dequantized"] else ""
            lines.append(f"\nIn bits per dimension of the target: {bits:.4f}{kind}\n")
        return "".join(lines) + "\n"
    if r["num_samples"] is None:
        return _ais_only_table(r)
    n = r["notation"]
    k_max = r["num_samples"]
    # eval.json of earlier versions: the naive pass always ran, at K = num_samples
    k_naive = r.get("num_samples_prior", k_max if "log_px_prior" in s else None)
    naive_row = (
        [_row(f"log {p}, z from the prior {n['prior']} (K = {k_naive})", s["log_px_prior"])]
        if k_naive
        else []
    )
    naive_ess = (
        [
            f"| the prior {escape_cell(n['prior'])}, K = {k_naive} "
            f"| {s['ess_prior']['mean']:.2f} | {s['ess_prior']['min']:.2f} |\n"
        ]
        if k_naive
        else []
    )
    lines = [
        _head(r, f"K = {k_max} importance samples per point, seed {r['seed']}, one run"),
        _row("ELBO (= L_1)", s["elbo"]),
        *[_row(f"L_{k} (IWAE bound, {k_max // k} groups)", s[f"L_{k}"]) for k in r["ks"] if k > 1],
        _row(f"log {p}, z from {n['guide']} (K = {k_max})", s["log_px"]),
        *ais_rows(r, _row),
        *naive_row,
        *(
            [_row(f"log {p}, exact (the latents summed out)", s["log_px_exact"])]
            if "log_px_exact" in s
            else []
        ),
        _row(f"gap log {p} - ELBO, estimates D[{n['guide']} || {n['posterior']}]", s["gap"]),
        "\nEffective sample size of the K importance weights per point (1 to K):\n\n",
        "| z drawn from | mean ESS | min ESS |\n|---|---|---|\n",
        f"| {escape_cell(n['guide'])}, K = {k_max} | {s['ess']['mean']:.2f} "
        f"| {s['ess']['min']:.2f} |\n",
        *naive_ess,
        *khat_lines(r),
        *ais_lines(r),
    ]
    if not k_naive:
        lines.append(
            f"\nNo naive estimate of log {p} with z from the prior {n['prior']} was made "
            "(`--naive-samples 0`).\n"
        )
    if r.get("negative_elbo_10_particles") is not None:
        lines.append(
            f"\nNegative ELBO from {TUTORIAL_ELBO_PARTICLES} fresh particles through "
            f"Trace_ELBO (TraceEnum_ELBO where the guide enumerates a discrete site; the "
            f"metric of Pyro's CVAE tutorial; for any model an upper bound "
            f"on -log {p}): {r['negative_elbo_10_particles']:.2f} nats per data point "
            "(compare with minus the ELBO above).\n"
        )
    if r.get("log_px_minus_exact"):
        d = r["log_px_minus_exact"]
        lines.append(
            f"\nThe importance-sampled log {p} minus the exact one, paired per point: "
            f"{d['mean']:.4f} ± {d['stderr']:.4f} nats.\n"
        )
    if r.get("proposal_note"):
        lines.append(f"\nThe importance samples come from {r['proposal_note']}.\n")
    if bits is not None:
        data = "binarized images" if r["binarize"] != "none" else "the original grey levels"
        kind = "continuous density on dequantized pixels" if r["dequantized"] else "discrete"
        lines.append(
            f"\nIn bits per dimension of the target ({data}): log {p} {bits:.4f}, "
            f"ELBO {r['bits_per_dim']['elbo']:.4f} (lower is better; {kind} likelihood)\n"
        )
    g = r.get("gap_decomposition")
    if g:
        lines += [
            f"\nGap decomposition (Cremer et al. 2018) on {g['num_points']} of these points; "
            f"q*(z) fitted per point by {g['steps']} SVI steps from the encoder's output; "
            "log P(X) importance-sampled with q*:\n\n",
            "| quantity | mean | std. error |\n|---|---|---|\n",
            *[_row(label, g[key]) for key, label in GAP_ROWS],
        ]
    if k_naive and not math.isfinite(s["log_px_prior"]["mean"]):
        lines.append("\nThe naive estimate is -inf: no prior sample explained some point at all.\n")
    lines += bdmc_lines(r)
    return "".join(lines) + "\n"


def _ais_only_table(r: dict[str, Any]) -> str:
    """The table of ``evaluate --method ais``: AIS without importance sampling."""
    a, s, p = r["ais"], r["summary"], r["target"]
    lines = [
        _head(r, f"annealed importance sampling, seed {r['seed']}, one run"),
        *ais_rows(r, _row),
        *(
            [_row(f"log {p}, exact (the latents summed out)", s["log_px_exact"])]
            if "log_px_exact" in s
            else []
        ),
        *ais_lines(r),
    ]
    if r.get("negative_elbo_10_particles") is not None:
        elbo = -r["negative_elbo_10_particles"]
        lines.append(
            f"\nELBO from {TUTORIAL_ELBO_PARTICLES} fresh particles through Trace_ELBO: "
            f"{elbo:.2f} nats per data point; AIS - ELBO: {a['log_px']['mean'] - elbo:.2f}.\n"
        )
    lines += bdmc_lines(r)
    return "".join(lines) + "\n"
