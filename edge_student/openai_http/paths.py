"""The HTTP API's paths (the metrics' `method` label and the probes name them too)."""

from __future__ import annotations

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
COUNTED_PATHS = (CHAT_PATH, COMPLETIONS_PATH, MODELS_PATH, HEALTH_PATH)  # the `method` label stays low-cardinality
