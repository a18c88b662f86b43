from __future__ import annotations

from django.urls import path

from . import views

app_name = "generation"
urlpatterns = [
    path("<int:pk>/", views.run_detail, name="run_detail"),
]
