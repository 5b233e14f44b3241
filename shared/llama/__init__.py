"""The batched llama.cpp engine both tiers can run: model wrapper, text streaming, engine and its settings."""
