"""A draft evaluation report (`train.eval_report.evaluate_drafts`) in numbers. No Dagster import."""

from __future__ import annotations

from ..fileio import sha256_json

MANIFEST_FIELDS = ("acceptance_length", "untrained_acceptance_length", "k", "lossless", "num_prompts")


def report_version(report: dict) -> str:
    """The evaluation's data version: 24 hex chars of the report's hash, timings left out (the
    same drafts and settings give the same version)."""
    return sha256_json({k: v for k, v in report.items() if k not in ("seconds", "created_at")})[:24]


def headline_numbers(report: dict) -> dict:
    """The report's headline: acceptance lengths (tokens per target forward) of the trained and
    untrained drafts and their difference (`improvement`, rounded to 4 places), `k`, `lossless`,
    `num_prompts`, `generated_tokens` (None when absent)."""
    return {
        "acceptance_length": report["acceptance_length"],
        "untrained_acceptance_length": report["untrained_acceptance_length"],
        "improvement": round(report["acceptance_length"] - report["untrained_acceptance_length"], 4),
        "k": report["k"],
        "lossless": report["lossless"],
        "num_prompts": report["num_prompts"],
        "generated_tokens": report.get("generated_tokens"),
    }


def per_category_numbers(report: dict, limit: int = 20) -> dict[str, float]:
    """`previous_acceptance_length` (when the previous draft was evaluated) and
    `acceptance_length/<category>` for the first `limit` categories by name: plain floats, so a
    UI can plot them per version."""
    out: dict[str, float] = {}
    if report.get("previous"):
        out["previous_acceptance_length"] = report["previous"]["acceptance_length"]
    for cat, r in sorted((report.get("per_category") or {}).items())[:limit]:
        out[f"acceptance_length/{cat}"] = float(r["acceptance_length"])
    return out


def per_set_numbers(report: dict) -> dict[str, float]:
    """`acceptance_length/<set>/k<k>` for every evaluation set and k of the report (plain floats)."""
    return {
        f"acceptance_length/{name}/k{k}": float(e["acceptance_length"])
        for name, by_k in (report.get("sets") or {}).items()
        for k, e in by_k.items()
    }
