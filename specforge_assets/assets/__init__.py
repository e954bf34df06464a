"""Dagster mapping onto the domain packages, one module per layer. Each layer module gives
`definitions(store)` (its assets, checks and resources, built with the configuration `store`
reads; `definitions.build_definitions` merges them); `_checks`, `_lineage` and `_metadata` are the
one way to declare a check, look up what Dagster recorded, and format metadata."""
