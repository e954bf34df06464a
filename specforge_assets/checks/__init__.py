"""The checks' domain side (no Dagster): DuckDB SQL beside the Python that runs it, and the few
checks that need a tokenizer or torch (`tokenize.vocab_mapping_valid`,
`tokenize.matches_target_chat_template`). Every check returns an `outcome.Outcome` and reads its
files through `_duck.Reader` (on an object-store root: the committed objects). Declared on their
assets in `assets/`."""
