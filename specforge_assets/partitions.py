"""Source partitions: one per source, defined once and imported everywhere.

Dynamic partitions (keys live in the instance): a source declared in `configs/sources.yaml`
or a file dropped into the incoming folder becomes a partition without a code reload.
`sync_source_partitions` registers the configured ones (the demo, the sensor and the tests
call it).
"""

from __future__ import annotations

import dagster as dg

from .paths import check_key

SOURCES_PARTITION_NAME = "sources"
source_partitions = dg.DynamicPartitionsDefinition(name=SOURCES_PARTITION_NAME)


def configured_source_keys(config: dict | None = None) -> list[str]:
    """The valid keys of `configs/sources.yaml` `sources:` mapping, in file order. A bad key
    (`"bad key!"`, `../x`) is left out here, so it never stops the others from registering;
    `invalid_source_keys` says which and why (the sensors log it)."""
    from .sources.config import source_keys

    return source_keys(config)[0]


def invalid_source_keys(config: dict | None = None) -> dict[str, str]:
    """`{bad key: reason}` of `configs/sources.yaml` `sources:` (empty when all are valid)."""
    from .sources.config import source_keys

    return source_keys(config)[1]


def sync_source_partitions(instance: dg.DagsterInstance, keys: list[str] | None = None) -> list[str]:
    """Add missing partitions for `keys` (default: configured sources). Returns the added ones."""
    keys = configured_source_keys() if keys is None else [check_key(k) for k in keys]
    existing = set(instance.get_dynamic_partitions(SOURCES_PARTITION_NAME))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, new)
    return new
