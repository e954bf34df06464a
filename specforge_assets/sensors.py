"""Sensors and jobs (filled by the platform issue)."""
sensors: list = []
jobs: list = []
