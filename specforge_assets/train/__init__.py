"""train (no Dagster import in domain packages)."""
