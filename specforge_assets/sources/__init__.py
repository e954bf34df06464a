"""sources (no Dagster import in domain packages)."""
