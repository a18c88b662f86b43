from __future__ import annotations

from django.urls import path

from . import views

app_name = "generation"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("<int:pk>/", views.run_detail, name="run_detail"),
    path("<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
]
