"""Layer: tokenized — `tokenized/dataset` and `tokenized/vocab_mapping` + their checks."""

from pathlib import Path

import dagster as dg

from ..checks import tokenize as tok_checks
from ._checks import InAssetCheck, check_results, check_specs
from ._failures import expected_failures
from ._metadata import pictures, png
from .. import charts
from ..fileio import read_manifest
from ._lineage import lineage_metadata, link_run_to_trigger, pinned_input, upstream_versions
from ..resources import SpecforgeStore
from ..target import target_config
from ..tokenize.build import build_tokenized, build_vocab_mapping, tokenize_config

from ..keys import TOKENIZED as DATASET_KEY
from ..keys import VOCAB as VOCAB_KEY
from ..keys import TARGET as TARGET_KEY
from ..keys import MIX as MIX_KEY


# Dagster code versions: bump one when what its asset computes changes (it and all below turn stale)
DATASET_CODE_VERSION = "tokenize-v1"
VOCAB_CODE_VERSION = "vocab-v1"


DATASET_CHECKS = [
    InAssetCheck(
        "tokenized_zero_supervised_rows",
        True,
        "Rows with zero supervised tokens stay under the configured rate; all-zero masks fail naming the template.",
        lambda ds_dir, cfg, manifest, **_: tok_checks.zero_supervised(
            ds_dir, float(cfg["checks"]["max_zero_supervised_rate"]), manifest.get("template", "?")
        ),
    ),
    InAssetCheck(
        "tokenized_supervised_fraction",
        False,
        "Share of supervised tokens within configured bounds.",
        lambda ds_dir, cfg, **_: tok_checks.supervised_fraction(
            ds_dir, float(cfg["checks"]["supervised_fraction"][0]), float(cfg["checks"]["supervised_fraction"][1])
        ),
    ),
    InAssetCheck(
        "tokenized_ids_complete",
        True,
        "Row ids unique, and every mix row is present (or quarantined).",
        lambda ds_dir, mix_train, **_: tok_checks.ids_unique_and_complete(ds_dir, mix_train),
    ),
    InAssetCheck(
        "tokenized_lengths",
        True,
        "Every row's length <= max_length and ids/mask lengths agree.",
        lambda ds_dir, manifest, **_: tok_checks.lengths_within(ds_dir, int(manifest["stats"]["max_length"])),
    ),
    InAssetCheck(
        "matches_target_chat_template",
        False,
        "A sample of rows equals the target tokenizer's own apply_chat_template rendering (first difference shown).",
        lambda ds_dir, mix_train, manifest, target_path, trust_remote_code, **_: (
            tok_checks.matches_target_chat_template(
                ds_dir,
                mix_train,
                target_path,
                manifest["template"],
                trust_remote_code,
                int(manifest["stats"]["max_length"]),
            )
        ),
    ),
]
VOCAB_CHECKS = [
    InAssetCheck(
        "vocab_mapping_consistent",
        True,
        "d2t/t2d have the right sizes and dtypes and agree with each other.",
        lambda vocab_dir, **_: tok_checks.vocab_mapping_folder_valid(vocab_dir),
    ),
]


@dg.asset(
    key=DATASET_KEY,
    group_name="tokenized",
    deps=[MIX_KEY, TARGET_KEY],
    kinds={"python", "parquet"},
    code_version=DATASET_CODE_VERSION,
    check_specs=check_specs(DATASET_KEY, DATASET_CHECKS),
)
def tokenized_dataset(context: dg.AssetExecutionContext, store: SpecforgeStore):
    """The mix rendered with the target tokenizer's chat template and tokenized with SpecForge's
    assistant-only loss mask (identical to preprocess_conversations by default; corrected options
    in configs/tokenize.yaml). Parquet shards (id, input_ids, loss_mask, length, ...) + train.jsonl
    in SpecForge's pre-tokenized form, under <root>/tokenized/dataset/. Content-addressed: the
    cache key (mix rows' consumed content, tokenizer files, chat template, template fields,
    max_length, options) means identical inputs are never recomputed. The DataVersion is the hash
    of the output rows (id, input_ids, loss_mask): a re-tokenization that yields the same rows is
    the same version (and does not retrain the draft). Reads the mix by version
    (`<root>/versions/mix/<v>/`) and keeps its own immutable copy under
    `<root>/versions/tokenized_dataset/<v>/`."""
    from ..tokenize.dataset import summary_line  # pyarrow: not at code-location load

    root = store.root()
    inputs = upstream_versions(context)
    link_run_to_trigger(context, inputs)  # an automation run alone (no mix step before it) says why it ran
    mix_in = pinned_input(context.instance, MIX_KEY, "mix", root)
    target_in = pinned_input(context.instance, TARGET_KEY, "target_model", root)
    with expected_failures():
        res = build_tokenized(
            root,
            store.config("tokenize"),
            store.config("target"),
            mix_dir=mix_in["path"],
            manifest_extra={"inputs": {"mix/training_mix": mix_in, "models/target_model": target_in}},
        )
    st = res["stats"]
    out = res["dir"]
    lengths = res["lengths"]
    for w in res["warnings"]:
        context.log.warning(w)
    context.log.info(f"cache {'hit' if res['cache_hit'] else 'miss'}: {res['key']}")
    cuts = summary_line(st)
    if cuts:
        context.log.warning(cuts)
    md = {
        "dagster/row_count": st["rows"],
        "tokens": st["tokens"],
        "supervised_tokens": st["supervised_tokens"],
        "supervised_fraction": float(st["supervised_fraction"]),
        "zero_supervised_rows": st["zero_supervised_rows"],
        "truncated_rows": st["truncated_rows"],
        "rows_failed": st["rows_failed"],
        "rows_failed_by_reason": dg.MetadataValue.json(st.get("rows_failed_by_reason", {})),
        "rows_no_assistant_turn": st.get("rows_no_assistant_turn", 0),
        "rows_cut_consecutive_assistant": st.get("rows_cut_consecutive_assistant", 0),
        "rows_cut": dg.MetadataValue.json(st.get("rows_cut", {})),
        "messages_dropped": st.get("messages_dropped", 0),
        "messages_dropped_by_reason": dg.MetadataValue.json(st.get("messages_dropped_by_reason", {})),
        "fallback_render_rows": st["fallback_render_rows"],
        "rows_with_warnings": st["rows_with_warnings"],
        "warning_examples": dg.MetadataValue.json(st["warning_examples"]),
        "warnings": dg.MetadataValue.json(res["warnings"]),
        "chat_template": res["template"].name,
        "max_length": st["max_length"],
        "parity_mode": res["options"].parity,
        "options": dg.MetadataValue.json(res["options"].as_dict()),
        "cache_key": res["key"],
        "content_version": res["version"],
        "version_path": dg.MetadataValue.path(str(res["version_dir"])),
        "mix_version": mix_in["data_version"] or "",
        "cache_hit": res["cache_hit"],
        "cache_pruned": dg.MetadataValue.json(res["cache_pruned"]),
        "length_histogram": png(res["lengths_png"], "tokens per row"),
        **pictures(length_histogram_inline=charts.length_histogram_inline_md(lengths, st["max_length"])),
        "example": dg.MetadataValue.md(res["example_md"]),
        "path": dg.MetadataValue.path(str(out)),
        "train_jsonl": dg.MetadataValue.path(str(out / "train.jsonl")),
        "shards": dg.MetadataValue.json(st["shards"]),
        **lineage_metadata(inputs),
    }
    if res["example_html"]:
        md["example_html"] = dg.MetadataValue.path(str(res["example_html"]))
    yield dg.MaterializeResult(data_version=dg.DataVersion(res["version"]), metadata=md)
    man = read_manifest(out) or {}
    tcfg = target_config(store.config("target"))
    yield from check_results(
        DATASET_KEY,
        DATASET_CHECKS,
        ds_dir=out,
        manifest=man,
        mix_train=res["mix_train"],
        cfg=tokenize_config(store.config("tokenize")),
        target_path=res["tokenizer_path"],  # the tokenizer the rows were made with
        trust_remote_code=tcfg["trust_remote_code"],
    )


@dg.asset(
    key=VOCAB_KEY,
    group_name="tokenized",
    deps=[DATASET_KEY, TARGET_KEY],
    kinds={"python", "pytorch"},
    code_version=VOCAB_CODE_VERSION,
    check_specs=check_specs(VOCAB_KEY, VOCAB_CHECKS),
)
def vocab_mapping(context: dg.AssetExecutionContext, store: SpecforgeStore):
    """Draft vocabulary: the `draft_vocab_size` target tokens most frequent at supervised
    positions (ties: first appearance in dataset order, then ascending id; fill-up with zero-count
    ids ascending), saved as SpecForge's {"d2t": LongTensor, "t2d": BoolTensor} torch file at
    <root>/tokenized/vocab_mapping/vocab_mapping.pt. Clamped to the target vocabulary size."""
    from ..tokenize.vocab import TIE_BREAK, clamp_warning, fill_warning

    root = store.root()
    ds_in = pinned_input(context.instance, DATASET_KEY, "tokenized_dataset", root)
    with expected_failures():
        res = build_vocab_mapping(
            root,
            store.config("tokenize"),
            store.config("target"),
            dataset_dir=ds_in["path"],
            manifest_extra={"inputs": {"tokenized/dataset": ds_in}},
        )
    for warning in (clamp_warning(res), fill_warning(res)):
        if warning:
            context.log.warning(warning)
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(res["version"]),
        metadata={
            "draft_vocab_size": res["draft_vocab_size"],
            "requested_draft_vocab_size": res["requested_draft_vocab_size"],
            "clamped_to_target_vocab": res["clamped"],
            "target_vocab_size": res["target_vocab_size"],
            "coverage": float(res["coverage"]),
            "distinct_supervised_tokens": res["distinct_supervised_tokens"],
            "filled_zero_count_ids": res["filled_zero_count_ids"],
            "fill_warning": fill_warning(res) or "",
            "supervised_tokens": res["supervised_tokens"],
            "dagster/row_count": res["rows"],
            "tie_break": TIE_BREAK,
            "path": dg.MetadataValue.path(str(res["path"])),
            "version_path": dg.MetadataValue.path(str(res["version_dir"])),
            "dataset_version": res["dataset_version"],
            **lineage_metadata(upstream_versions(context)),
        },
    )

    yield from check_results(VOCAB_KEY, VOCAB_CHECKS, vocab_dir=Path(res["path"]).parent)


def definitions(store: SpecforgeStore) -> dg.Definitions:
    """The layer's assets (their checks are in-asset: they run in their asset's own step;
    `definitions.build_definitions` merges every layer's)."""
    return dg.Definitions(assets=[tokenized_dataset, vocab_mapping])
