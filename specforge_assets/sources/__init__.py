"""Sources layer (no Dagster import): SpecForge presets as data, pure converters, loaders,
custom formats, the incoming folder, and the partition builder used by the asset.

The platform's file-drop sensor uses `list_incoming` and `resolve_source`.
"""

from .config import SourceSpec, incoming_dir, list_incoming, resolve_source
from .errors import HubUnavailableError, RowError, SourceError, UnknownSourceError, UnsupportedPresetError

__all__ = [
    "SourceSpec",
    "incoming_dir",
    "list_incoming",
    "resolve_source",
    "HubUnavailableError",
    "RowError",
    "SourceError",
    "UnknownSourceError",
    "UnsupportedPresetError",
]
