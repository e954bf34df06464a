"""specforge-assets: SpecForge-compatible EAGLE3 data preparation and training as Dagster assets."""

__version__ = "0.1.0"
