"""The code a benchmark compares against, measured in the same run: a source tree as of a git
revision of this repository, or a directory holding one (a machine without the repository's git
history, such as the lent GPU machine, gets the directory carried along)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# what a run of the code location needs: the package, its configs and instance settings
FULL_TREE = ("specforge_assets", "configs", "dagster_home/dagster.yaml", "workspace.yaml", "pyproject.toml")


def source_tree(ref: str, tmp: Path, paths: tuple[str, ...] = ("specforge_assets",)) -> Path:
    """`ref` as a directory: itself when it is one, else `paths` of git revision `ref`
    extracted under `tmp` (`git archive`). Raises `subprocess.CalledProcessError` for an unknown
    revision or when there is no git repository."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    out = tmp / f"src-{ref.replace('/', '_')}"
    out.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(REPO), "archive", ref, *paths], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=arch, check=True)
    return out
