"""The embedded default data (raw rows in each preset's hub schema); see generate.py."""
