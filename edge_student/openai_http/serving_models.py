"""`GET /v1/models`: the modes as models (gkt, gkt-student, gkt-teacher, and gkt@K for any K)."""

from __future__ import annotations

import time

from edge_student.openai_convert import MODELS, model_card
from edge_student.openai_types import ModelCard, ModelList
from edge_student.settings import EdgeSettings


class OpenAIServingModels:
    """The model list and each model's card."""

    def __init__(self, settings: EdgeSettings) -> None:
        self._settings = settings
        self._created = int(time.time())

    def list(self) -> ModelList:
        return ModelList(data=[model_card(name, self._settings, self._created) for name in MODELS])

    def get(self, name: str) -> ModelCard:
        return model_card(name, self._settings, self._created)
