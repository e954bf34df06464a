"""`specforge-assets prepare`: SpecForge's `prepare_data.py` flags, on the asset's code path."""

from __future__ import annotations

from pathlib import Path

from .. import paths

DEFAULT_OUTPUT = Path("cache") / "dataset"


def register(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="convert a SpecForge dataset preset to conversation JSONL (byte-compatible with prepare_data.py)",
        description=(
            "Write OUTPUT/<dataset>_train.jsonl (and _test.jsonl with --split-eval) exactly as SpecForge's "
            "scripts/prepare_data.py does for the same raw rows. Existing output is kept (never overwritten); "
            "a failing row aborts without leaving a partial file."
        ),
    )
    p.add_argument("--dataset", required=True, help="preset name (see configs/sources.yaml `presets:`)")
    p.add_argument(
        "--data-path",
        default=None,
        help="local raw data instead of the hub: a .parquet/.jsonl/.json file, or a folder laid out "
        "DIR/<config>/*.parquet|*.jsonl|*.json (multi-config presets) or DIR/*.parquet",
    )
    p.add_argument("--output-path", default=str(DEFAULT_OUTPUT), help="output folder (default: cache/dataset)")
    p.add_argument("--sample-size", type=int, default=None, help="keep the first N rows (before the split)")
    p.add_argument("--split-eval", action="store_true", help="also write a 5%% test split (seed 42)")
    p.add_argument(
        "--opc-subset",
        default=None,
        help="opc only: largescale_diverse_instruct (default), filtered_infinity_instruct, realuser_instruct or all",
    )
    p.add_argument("--offline", action="store_true", help="never contact the hub (also HF_HUB_OFFLINE=1)")
    p.set_defaults(func=run_prepare)


def cli_path(value: str | None) -> str | None:
    """A path typed on the command line: relative to the current directory, like any CLI tool
    (the data root applies only to paths written in configs/). `sample:<rel>` stays as it is."""
    if value is None or str(value).startswith("sample:"):
        return value
    return str(Path(value).expanduser().absolute())


def run_prepare(args) -> int:
    from .prepare import hub_offline_setting, prepare_preset

    config = paths.load_config("sources") or None
    # Expected failures (SourceError, a bad key, a missing file) reach the one CLI error path in
    # specforge_assets.cli.main: one `error:` line, exit 1.
    prepare_preset(
        args.dataset,
        args.output_path,
        data_path=cli_path(args.data_path),
        sample_size=args.sample_size,
        split_eval=args.split_eval,
        opc_subset=args.opc_subset,
        offline=hub_offline_setting(args.offline, config),
        config=config,
    )
    return 0
