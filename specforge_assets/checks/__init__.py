"""The checks' domain side (no Dagster): DuckDB SQL beside the Python that runs it, and the few
checks that need a tokenizer or torch (`tokenize.vocab_mapping_valid`,
`tokenize.matches_target_chat_template`). Every check returns an `outcome.Outcome`; the data
checks read their files through `_duck.Reader` (on an object-store root: the committed objects),
the model checks (`models`) read model folders with safetensors / transformers. Declared on their
assets in `assets/`."""
