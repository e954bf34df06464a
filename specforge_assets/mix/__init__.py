"""Training mix: source selection, weights/caps, dedup, seeded shuffle and eval split."""
