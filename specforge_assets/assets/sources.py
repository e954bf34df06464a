"""Layer: sources (placeholder until its issue lands)."""
assets: list = []
asset_checks: list = []
resources: dict = {}
