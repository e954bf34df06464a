"""Source partitions: one per source, defined once and imported everywhere.

Dynamic partitions (keys live in the instance): a source declared in `configs/sources.yaml`
or a file dropped into the incoming folder becomes a partition without a code reload.
`missing_source_partitions` says which keys are not partitions yet: the registration sensor
requests those (a `SensorResult`'s dynamic-partition request, recorded with the tick);
`sync_source_partitions` adds them directly (the demo, `specforge-assets register-sources`, tests).
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


def missing_source_partitions(instance: dg.DagsterInstance, keys: list[str]) -> list[str]:
    """The keys among `keys` (in their order) that are not source partitions of `instance` yet."""
    existing = set(instance.get_dynamic_partitions(SOURCES_PARTITION_NAME))
    return [k for k in keys if k not in existing]


def sync_source_partitions(instance: dg.DagsterInstance, keys: list[str] | None = None) -> list[str]:
    """Add missing partitions for `keys` (default: configured sources). Returns the added ones."""
    keys = configured_source_keys() if keys is None else [check_key(k) for k in keys]
    new = missing_source_partitions(instance, keys)
    if new:
        instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, new)
    return new
