"""mix (no Dagster import in domain packages)."""
