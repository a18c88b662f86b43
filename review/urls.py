from __future__ import annotations

from django.urls import path

from . import views

app_name = "review"
turn = "dialogues/<int:pk>/turns/<int:turn_pk>/"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("next/", views.review_next, name="next"),
    path("healthz/", views.healthz, name="healthz"),
    path("dialogues/<int:pk>/", views.dialogue, name="dialogue"),
    path("dialogues/<int:pk>/progress/", views.progress, name="progress"),
    path("dialogues/<int:pk>/approve/", views.approve, name="approve"),
    path("dialogues/<int:pk>/reject/", views.reject, name="reject"),
    path("dialogues/<int:pk>/reopen/", views.reopen, name="reopen"),
    path("dialogues/<int:pk>/release/", views.release, name="release"),
    path(turn, views.turn, name="turn"),
    path(f"{turn}edit/", views.turn_edit, name="turn_edit"),
    path(f"{turn}flag/", views.turn_flag, name="turn_flag"),
    path(f"{turn}revert/", views.turn_revert, name="turn_revert"),
    path(f"{turn}regenerate/", views.turn_regenerate, name="turn_regenerate"),
    path(f"{turn}flags/<int:flag_pk>/dismiss/", views.flag_dismiss, name="flag_dismiss"),
]
