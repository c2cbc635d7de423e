"""Offline dataset preparation: DFER datasets and SynthFER to ArrayRecord shards (see build_dataset)."""
