"""Teacher backends: one engine each behind the same interface; `create_backend` picks one from the settings."""

from __future__ import annotations

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.settings import TeacherSettings
from shared.metrics import GktMetrics


def create_backend(settings: TeacherSettings, metrics: GktMetrics) -> TeacherBackend:
    """The configured backend (imported lazily: the vLLM one pulls in torch)."""
    if settings.backend == "llamacpp":
        from cloud_teacher.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(settings, metrics)
    if settings.backend == "vllm":
        from cloud_teacher.backends.vllm import VllmBackend

        return VllmBackend(settings)
    from cloud_teacher.backends.openai import OpenAIBackend

    return OpenAIBackend(settings)
