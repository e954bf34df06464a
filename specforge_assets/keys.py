"""Asset keys, defined once: assets, checks, sensors, automation and tests import them here,
so a renamed key changes in one place (and the graph snapshot test notices)."""

import dagster as dg

SOURCES = dg.AssetKey(["sources", "conversations"])
REGENERATED = dg.AssetKey(["regenerated", "conversations"])
MIX = dg.AssetKey(["mix", "training_mix"])
TOKENIZED = dg.AssetKey(["tokenized", "dataset"])
VOCAB = dg.AssetKey(["tokenized", "vocab_mapping"])
TARGET = dg.AssetKey(["models", "target_model"])
DRAFT = dg.AssetKey(["models", "draft_model"])
EVALUATION = dg.AssetKey(["models", "draft_evaluation"])
HIDDEN_STATES = dg.AssetKey(["models", "target_hidden_states"])
