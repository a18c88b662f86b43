"""Who may review: members of the Reviewer group, and staff. Checked on the server for every
review endpoint; hiding buttons is a courtesy, not the control.

Reviewers also see the run pages (a dialogue's run, why its siblings failed). Those belong to
generation, which checks the `generation.view_generationrun` permission; the Reviewer group
is given it here, so generation needs to know nothing about reviewers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from review.models import REVIEWER_GROUP

View = Callable[..., HttpResponse]

# (app label, codename) of what the Reviewer group may do besides reviewing.
REVIEWER_PERMISSIONS = [("generation", "view_generationrun")]


def reviewer_group_setup(**kwargs: object) -> Group:
    """Create the Reviewer group if needed and grant it REVIEWER_PERMISSIONS (idempotent).

    Connected to post_migrate, so a new installation, every migrate and every test database
    have the group with its permissions.
    """
    group, _ = Group.objects.get_or_create(name=REVIEWER_GROUP)
    wanted = Permission.objects.none()
    for app_label, codename in REVIEWER_PERMISSIONS:
        wanted |= Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    group.permissions.add(*wanted)
    return group


def user_groups(user: AbstractBaseUser | AnonymousUser) -> dict[int, str]:
    """The user's groups by id. Cached on the user object: a request asks at most once, and
    both the access check and the review domains (ReviewPolicy) read it."""
    if not user.is_authenticated:
        return {}
    cached = getattr(user, "_group_names", None)
    if cached is None:
        cached = dict(user.groups.values_list("pk", "name"))
        user._group_names = cached
    return cached


def is_reviewer(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    return REVIEWER_GROUP in user_groups(user).values()


def reviewer_required(view: View) -> View:
    """403 with a polite page (not a bare error) for a logged-in user without reviewer access."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not is_reviewer(request.user):
            return render(request, "review/no_access.html", status=403)
        return view(request, *args, **kwargs)

    return wrapped
