"""The package both GKT tiers import: stubs, settings base, prompt formats, metrics and the llama.cpp engine."""
