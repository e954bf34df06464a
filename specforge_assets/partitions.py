"""Source partitions: one per source, defined once and imported everywhere.

Dynamic partitions (keys live in the instance): a source declared in `configs/sources.yaml`
or a file dropped into the incoming folder becomes a partition without a code reload.
`sync_source_partitions` registers the configured ones (the demo, the sensor and the tests
call it).
"""
from __future__ import annotations

import dagster as dg

from .paths import check_key, load_config

SOURCES_PARTITION_NAME = "sources"
source_partitions = dg.DynamicPartitionsDefinition(name=SOURCES_PARTITION_NAME)


def configured_source_keys(config: dict | None = None) -> list[str]:
    """Keys of `configs/sources.yaml` `sources:` mapping, in file order."""
    cfg = load_config("sources") if config is None else config
    keys = list((cfg.get("sources") or {}).keys())
    for k in keys:
        check_key(k)
    return keys


def sync_source_partitions(instance: dg.DagsterInstance, keys: list[str] | None = None) -> list[str]:
    """Add missing partitions for `keys` (default: configured sources). Returns the added ones."""
    keys = configured_source_keys() if keys is None else [check_key(k) for k in keys]
    existing = set(instance.get_dynamic_partitions(SOURCES_PARTITION_NAME))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, new)
    return new
