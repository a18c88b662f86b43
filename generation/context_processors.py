from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def llm_provider(request: HttpRequest) -> dict[str, object]:
    """Lets every page say when dialogues come from the offline demo provider."""
    return {"llm_is_demo": settings.SYNTHREVIEW_LLM_PROVIDER == "demo"}
