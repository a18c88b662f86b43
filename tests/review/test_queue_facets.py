"""Counts per filter on the queue: each option counts the dialogues it would give under the
other filters in force (worked out by hand on a fixture), in a constant number of queries,
loaded after the page and readable without JavaScript."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from review.models import DialogueReview, Flag, Suggestion
from review.selectors import QueueFilters, facet_counts, queue_page
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.review.helpers import HX

pytestmark = pytest.mark.django_db
FACETS = "/review/facets/"


@pytest.fixture
def fixture(reviewer):
    """Two runs. Run 1: A (warning, open flag), B (judge: factual), C (approved), D (assigned
    to the reviewer). Run 2 (another scenario): E (warning), F (assigned to a group)."""
    run1, run2 = RunFactory(), RunFactory()
    a, b, c, d = (dialogue_with_turns(2, run=run1, index=i) for i in range(4))
    e, f = (dialogue_with_turns(2, run=run2, index=i) for i in range(2))
    for dialogue in (a, e):
        turn = dialogue.turns.get(position=1)
        turn.warnings = ["repetition"]
        turn.save()
    Flag.objects.create(turn=a.turns.get(position=0), category="tone")
    Suggestion.objects.create(turn=b.turns.get(position=1), category="factual", severity=2)
    DialogueReview.objects.create(dialogue=c, status=DialogueReview.Status.APPROVED)
    DialogueReview.objects.create(dialogue=d, assigned_to=reviewer)
    group = Group.objects.create(name="Maths teachers")
    DialogueReview.objects.create(dialogue=f, assigned_group=group)
    return {"run1": run1, "run2": run2, "group": group}


def counts(filters, user):
    return {name: dict(counter) for name, counter in facet_counts(filters, user=user).items()}


def test_without_filters_every_option_counts_its_dialogues(fixture, reviewer):
    run1, run2, group = fixture["run1"], fixture["run2"], fixture["group"]
    got = counts(QueueFilters(status="all"), reviewer)
    assert got["run"] == {str(run1.pk): 4, str(run2.pk): 2}
    assert got["scenario"] == {str(run1.scenario_id): 4, str(run2.scenario_id): 2}
    assert got["warnings"] == {"yes": 2, "no": 4}
    assert got["flags"] == {"open": 1, "any": 1, "none": 5}
    assert got["judge"] == {"factual": 1}
    assert got["duplicates"] == {"no": 6}
    assert got["assignee"] == {"me": 1, "none": 4, f"u:{reviewer.pk}": 1, f"g:{group.pk}": 1}


def test_each_filter_counts_under_the_others_but_not_itself(fixture, reviewer):
    run1, run2 = fixture["run1"], fixture["run2"]
    filters = QueueFilters(run_id=run1.pk, choices=(("warnings", "no"),))  # awaiting: B, D
    got = counts(filters, reviewer)
    # Runs under "without warnings, awaiting": run 1 has B and D, run 2 has F.
    assert got["run"] == {str(run1.pk): 2, str(run2.pk): 1}
    # Warnings under "run 1, awaiting": A with, B and D without.
    assert got["warnings"] == {"yes": 1, "no": 2}
    assert got["judge"] == {"factual": 1}
    assert got["assignee"] == {"me": 1, "none": 1, f"u:{reviewer.pk}": 1}
    assert got["flags"] == {"none": 2}


def test_the_counts_agree_with_the_queue(fixture, reviewer):
    """Choosing an option gives as many dialogues as its count said."""
    run1 = fixture["run1"]
    base = QueueFilters(run_id=run1.pk, status="all", choices=(("flags", "none"),))
    got = counts(base, reviewer)
    for value, expected in got["warnings"].items():
        chosen = QueueFilters(
            run_id=run1.pk, status="all", choices=(("flags", "none"), ("warnings", value))
        )
        assert queue_page(chosen, user=reviewer).total == expected


def test_the_queue_loads_them_after_the_page(rclient, fixture):
    html = rclient.get("/review/", {"warnings": "yes"}).content.decode()
    query = "status=awaiting&amp;warnings=yes&amp;sort=queue"
    assert f'hx-get="/review/facets/?{query}" hx-trigger="load"' in html
    # Without JavaScript, the placeholder is a link to the same counts as a page.
    assert f'<a href="/review/facets/?{query}">' in html
    # Every page of the queue loads the same counts (the cursor is not part of them).
    later = rclient.get("/review/", {"warnings": "yes", "after": "WzEsIDFd"}).content.decode()
    assert f'hx-get="/review/facets/?{query}" hx-trigger="load"' in later


def test_the_fragment_and_the_page(rclient, fixture):
    run1 = fixture["run1"]
    fragment = rclient.get(FACETS, {"run": run1.pk}, **HX).content.decode()
    assert "<html" not in fragment and 'id="queue-facets"' in fragment
    assert 'aria-label="Automatic warnings"' in fragment
    # Choosing an option keeps the other filters; the chosen option clears itself.
    chosen = f"run={run1.pk}&amp;status=awaiting&amp;sort=queue&amp;warnings=yes"
    assert f'href="/review/?{chosen}"' in fragment
    assert 'href="/review/?status=awaiting&amp;sort=queue"' in fragment  # the run: cleared
    page = rclient.get(FACETS, {"run": run1.pk}).content.decode()
    assert "<h1>Counts per filter</h1>" in page and 'id="queue-facets"' in page


def test_a_reviewer_outside_a_domain_counts_nothing_of_it(fixture, reviewer):
    from review.models import ReviewPolicy

    policy = ReviewPolicy.objects.create(scenario=fixture["run2"].scenario)
    policy.groups.add(Group.objects.create(name="Cardiology experts"))
    got = counts(QueueFilters(status="all"), reviewer)
    assert str(fixture["run2"].pk) not in got["run"]
    assert got["warnings"] == {"yes": 1, "no": 3}


# Session, user, the user's groups, reviewers and groups to list, the run and scenario choices,
# review policies, the counts.
FACET_QUERIES = 9


@pytest.mark.parametrize("n_dialogues", [3, 60])
def test_the_counts_cost_a_constant_number_of_queries(
    client, reviewer, n_dialogues, django_assert_max_num_queries
):
    runs = [RunFactory() for _ in range(3)]
    for i in range(n_dialogues):
        dialogue_with_turns(2, run=runs[i % 3], index=i)
    UserFactory(reviewer=True)
    client.force_login(reviewer)
    params = {"status": "all", "flags": "none", "warnings": "no", "assignee": "none"}
    with django_assert_max_num_queries(FACET_QUERIES) as captured:
        response = client.get(FACETS, params, **HX)
    assert response.status_code == 200
    assert len(captured.captured_queries) == FACET_QUERIES
