from __future__ import annotations

from django.urls import path

from . import views

app_name = "review"
turn = "dialogues/<int:pk>/turns/<int:turn_pk>/"
csv = "insights/csv/"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("facets/", views.queue_facets, name="queue_facets"),
    path("next/", views.review_next, name="next"),
    path("bulk/", views.bulk, name="bulk"),
    path("mine/", views.my_reviews, name="mine"),
    path("healthz/", views.healthz, name="healthz"),
    path("dialogues/<int:pk>/", views.dialogue, name="dialogue"),
    path("dialogues/<int:pk>/progress/", views.progress, name="progress"),
    path("dialogues/<int:pk>/approve/", views.approve, name="approve"),
    path("dialogues/<int:pk>/approve-next/", views.approve_next, name="approve_next"),
    path("dialogues/<int:pk>/reject/", views.reject, name="reject"),
    path("dialogues/<int:pk>/adjudicate/", views.adjudicate, name="adjudicate"),
    path("agreement/runs/<int:pk>/", views.run_agreement, name="agreement_run"),
    path("dialogues/<int:pk>/reopen/", views.reopen, name="reopen"),
    path("dialogues/<int:pk>/release/", views.release, name="release"),
    path("insights/", views.scenario_insights, name="insights"),
    path("insights/scenarios/<int:pk>/", views.scenario_insights, name="insights_scenario"),
    path("insights/runs/<int:pk>/", views.run_insights, name="insights_run"),
    path("insights/team/", views.team_insights, name="insights_team"),
    path(
        f"{csv}runs/<int:pk>/<slug:slug>.csv",
        views.insights_csv,
        {"board": "run"},
        name="insights_run_csv",
    ),
    path(
        f"{csv}scenarios/<int:pk>/<slug:slug>.csv",
        views.insights_csv,
        {"board": "scenario"},
        name="insights_scenario_csv",
    ),
    path(
        f"{csv}all/<slug:slug>.csv", views.insights_csv, {"board": "all"}, name="insights_all_csv"
    ),
    path(
        f"{csv}team/<slug:slug>.csv",
        views.insights_csv,
        {"board": "team"},
        name="insights_team_csv",
    ),
    path(turn, views.turn, name="turn"),
    path(f"{turn}edit/", views.turn_edit, name="turn_edit"),
    path(f"{turn}flag/", views.turn_flag, name="turn_flag"),
    path(f"{turn}revert/", views.turn_revert, name="turn_revert"),
    path(f"{turn}regenerate/", views.turn_regenerate, name="turn_regenerate"),
    path(f"{turn}flags/<int:flag_pk>/dismiss/", views.flag_dismiss, name="flag_dismiss"),
    path(
        f"{turn}suggestions/<int:suggestion_pk>/accept/",
        views.suggestion_accept,
        name="suggestion_accept",
    ),
    path(
        f"{turn}suggestions/<int:suggestion_pk>/dismiss/",
        views.suggestion_dismiss,
        name="suggestion_dismiss",
    ),
]
