"""A draft evaluation report (`train.eval_report.evaluate_drafts`) in numbers, and its publication
as a version. No Dagster import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def evaluate_and_publish(root: Path, out: Path, inputs: dict, evaluate: Callable[[Path], dict]) -> tuple[dict, str]:
    """Run `evaluate(staging)` (it writes report.json and the plots into `staging`, a folder
    beside `out`, where the report it replaces is first copied: report.json becomes the previous
    one), write manifest.json (the inputs, their data versions, the report's sha256 and the
    headline fields `MANIFEST_FIELDS`), keep the folder as
    `<root>/versions/draft_evaluation/<version>/` and publish it as `out` in one step.
    `inputs`: `{asset: {data_version, path[, run_id]}}`. Returns (report, version)."""
    import shutil

    from ..fileio import sha256_file, staged_dir, write_manifest
    from ..versioned import publish_version

    with staged_dir(out) as tmp:
        for name in ("report.json", "previous_report.json"):  # what the report it replaces becomes
            if (out / name).exists():
                shutil.copy2(out / name, tmp / name)
        report = evaluate(tmp)
        write_manifest(
            tmp,
            layer="models",
            asset="draft_evaluation",
            upstream_data_versions={k: v.get("data_version") for k, v in inputs.items()},
            inputs=inputs,
            report_sha256=sha256_file(tmp / "report.json"),
            **{k: report[k] for k in MANIFEST_FIELDS},
        )
        version = report_version(report)
        publish_version(tmp, root, "draft_evaluation", version, skip=("previous_report.json",))
    return report, version
