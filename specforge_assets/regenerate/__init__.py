"""regenerate (no Dagster import in domain packages)."""
