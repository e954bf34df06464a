"""Test-and-benchmark support code, imported as `tests.helpers.<module>` (run from the repository
root: `python -m pytest`, and the bench/ scripts put the root on sys.path). Nothing here ships in
the package: the toy training data and target (`toy`), the straightforward SpecForge tokenization
the fast path is checked against (`tokenize_reference`), a JSONL writer (`jsonl`), and the
crash-at-step hook of the resume tests (`killhook`, with its `killhook_site/sitecustomize.py`)."""
