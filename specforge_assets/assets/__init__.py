"""Thin Dagster wrappers, one module per layer. Each module exports `assets`,
`asset_checks` and `resources` (a dict of resource key → default resource)."""
