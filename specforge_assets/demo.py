"""`specforge-assets demo`: materialize the whole graph on the embedded default, in the
persistent instance under $DAGSTER_HOME, so the UI shows the history afterwards."""

from __future__ import annotations

import json
import os
import sys
import time

from .paths import REPO_ROOT, data_root


def register(sub) -> None:
    p = sub.add_parser("demo", help="materialize the whole asset graph on the shipped sample data")
    p.add_argument("--sources", nargs="*", default=None, help="source partitions (default: all configured)")
    p.set_defaults(func=run_demo)
    r = sub.add_parser(
        "register-sources",
        help="add the configured sources (and files in the incoming folder) as partitions of the Dagster instance",
        description=(
            "Registers every source of configs/sources.yaml and every valid entry of the incoming folder as a "
            "partition in the instance under $DAGSTER_HOME, so `dagster asset materialize --partition KEY` works "
            "on a fresh instance (the register_sources / incoming sensors do the same when the daemon runs)."
        ),
    )
    r.set_defaults(func=run_register_sources)


def run_register_sources(args) -> int:
    from .partitions import SOURCES_PARTITION_NAME, invalid_source_keys, sync_source_partitions
    from .sources.config import scan_incoming

    instance = _instance()
    scan = scan_incoming()
    incoming = sorted(scan.found)
    for name, reason in scan.skipped.items():  # every drop-folder entry that is not a partition, and why
        print(f"warning: incoming/{name} skipped: {reason}", file=sys.stderr)
    added = sync_source_partitions(instance) + sync_source_partitions(instance, incoming)
    for key, reason in invalid_source_keys().items():
        print(f"warning: configs/sources.yaml source {key!r} skipped: {reason}", file=sys.stderr)
    known = instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)
    print(
        f"registered {len(added)} new source partition(s): {', '.join(added) or '-'}; the instance has {len(known)}: "
        f"{', '.join(known)}"
    )
    return 0


def _instance():
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "dagster_home"))
    return dg.DagsterInstance.get()


def materialize_selection(instance, selection, partition_key: str | None = None, *, trigger: str) -> bool:
    """Materialize `selection` (asset keys) of the project's Definitions, with their checks and
    resources, in-process in `instance`; the run is tagged `specforge/trigger=<trigger>`.
    Returns whether the run succeeded (failures are in the run, never raised)."""
    import dagster as dg

    from .definitions import defs
    from .tags import TRIGGER_TAG

    r = dg.materialize(
        list(defs.assets) + list(defs.asset_checks or []),
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
        tags={TRIGGER_TAG: trigger},
    )
    return r.success


def run_demo(args) -> int:

    from .definitions import defs
    from .partitions import configured_source_keys, source_partitions, sync_source_partitions
    from .tags import OPTIONAL_TAG, TRIGGER_DEMO

    t0 = time.time()
    instance = _instance()
    (data_root() / "incoming").mkdir(parents=True, exist_ok=True)  # the drop folder users look for
    keys = args.sources or configured_source_keys()
    sync_source_partitions(instance, keys)
    graph = defs.resolve_asset_graph()
    # Assets tagged `OPTIONAL_TAG` (the offline-mode hidden states) are not part of the demo.
    materializable = [
        k
        for k in graph.toposorted_asset_keys
        if k in graph.materializable_asset_keys and OPTIONAL_TAG not in (graph.get(k).tags or {})
    ]
    partitioned = [k for k in materializable if graph.get(k).partitions_def == source_partitions]
    # Unpartitioned assets with no partitioned ancestor (e.g. the demo target model, which the
    # regeneration of a source serves) run first; the rest (mix and below) after all partitions.
    downstream: set = set()
    for k in materializable:  # toposorted, so parents are classified first
        if any(p in partitioned or p in downstream for p in graph.get(k).parent_keys):
            downstream.add(k)
    unpartitioned = [k for k in materializable if graph.get(k).partitions_def is None]
    before = [k for k in unpartitioned if k not in downstream]
    after = [k for k in unpartitioned if k in downstream]
    failed = []

    def run(selection, label, partition_key=None):
        print(f"[demo] {label}: {', '.join(k.to_user_string() for k in selection)}", flush=True)
        if not materialize_selection(instance, selection, partition_key, trigger=TRIGGER_DEMO):
            failed.append(label)

    if before:
        run(before, "inputs")
    if partitioned and not failed:
        for key in keys:
            run(partitioned, f"source partition {key}", partition_key=key)
    if after and not failed:
        run(after, "training mix and below")
    print(f"[demo] finished in {time.time() - t0:.0f}s; data under {data_root()}", flush=True)
    report = data_root() / "models" / "draft_evaluation" / "report.json"
    if report.exists():
        rep = json.loads(report.read_text())
        print(
            "[demo] draft acceptance length {:.2f} vs untrained {:.2f} (k={}, lossless={}), checkpoint {}".format(
                rep["acceptance_length"],
                rep["untrained_acceptance_length"],
                rep["k"],
                rep["lossless"],
                rep.get("checkpoint_path"),
            )
        )
    if failed:
        print(f"[demo] FAILED: {failed} — open the UI (make ui) to see the run logs", file=sys.stderr)
        return 1
    print("[demo] open the UI: make ui  →  http://127.0.0.1:3000", flush=True)
    return 0
