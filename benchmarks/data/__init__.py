"""The benchmark data files (JSONL) with their provenance and licence note, README.md."""
