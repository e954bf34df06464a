"""Dagster mapping onto the domain packages, one module per layer. Each layer module exports
`assets` (regenerate: `build_assets(store)`, built per configuration), `asset_checks` and
`resources` (a dict of resource key → default resource); `_checks`, `_lineage` and `_metadata`
are the one way to declare a check, look up what Dagster recorded, and format metadata."""
