from __future__ import annotations

from django.urls import path

from . import views

app_name = "review"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("dialogues/<int:pk>/", views.dialogue_detail, name="dialogue"),
]
