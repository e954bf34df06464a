"""DuckDB quality checks: SQL beside the Python that runs it."""
