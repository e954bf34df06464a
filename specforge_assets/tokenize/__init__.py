"""tokenize (no Dagster import in domain packages)."""
