from __future__ import annotations

from django.http import HttpRequest

from .llm import current_provider


def llm_provider(request: HttpRequest) -> dict[str, object]:
    """Lets every page say when dialogues come from the offline demo provider."""
    return {"llm_is_demo": current_provider() == "demo"}
