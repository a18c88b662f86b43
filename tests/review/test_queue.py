"""The queue page: keyset pages, search, sorting, filters with counts, bulk actions, domains,
assignment, "My reviews", approve-and-next and the activity timeline."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db.models import Count
from django.urls import reverse

from generation.models import Dialogue
from review import services
from review.models import DialogueReview, Flag, ReviewEvent, ReviewPolicy
from review.selectors import QueueFilters, queue_page
from review.selectors.keyset import decode_cursor
from review.selectors.queue import QUEUE_ORDERINGS, QueueOrdering
from review.services import NotAllowed
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.review.helpers import HX, turn_of, url

pytestmark = pytest.mark.django_db
QUEUE = "/review/"  # reverse("review:queue")


def _dialogues(n: int, **kwargs) -> list[Dialogue]:
    run = kwargs.pop("run", None) or RunFactory()
    return [dialogue_with_turns(1, run=run, topic=f"topic {i:03}", **kwargs) for i in range(n)]


def _ids(response) -> list[int]:
    return [d.pk for d in response.context["rows"]]


# --- Keyset pages and sorting ----------------------------------------------------------------


def test_pages_walk_forward_and_back_without_gaps_or_repeats(rclient):
    ids = [d.pk for d in _dialogues(120)]
    seen, params, pages = [], {"status": "all"}, []
    while True:
        response = rclient.get(QUEUE, params)
        pages.append(_ids(response))
        seen += pages[-1]
        cursor = response.context["page"].next_cursor
        if not cursor:
            break
        params = {"status": "all", "after": cursor}
    assert [len(p) for p in pages] == [50, 50, 20]
    assert seen == ids  # queue order: run, then position in the run
    # Previous from the last page is the middle page; previous again is the first.
    previous = response.context["page"].previous_cursor
    response = rclient.get(QUEUE, {"status": "all", "before": previous})
    assert _ids(response) == pages[1]
    response = rclient.get(
        QUEUE, {"status": "all", "before": response.context["page"].previous_cursor}
    )
    assert _ids(response) == pages[0] and response.context["page"].first


@pytest.mark.parametrize(
    "sort, expected",
    [("newest", lambda ds: [d.pk for d in reversed(ds)]),
     ("topic", lambda ds: [d.pk for d in sorted(ds, key=lambda d: (d.topic, d.pk))])],
)  # fmt: skip
def test_orderings_page_through_everything_in_order(rclient, sort, expected):
    dialogues = _dialogues(60)
    # Topics out of id order, with ties broken by id.
    for i, dialogue in enumerate(dialogues):
        dialogue.topic = f"topic {(i * 7) % 13:02}"
        dialogue.save()
    response = rclient.get(QUEUE, {"status": "all", "sort": sort})
    first = _ids(response)
    cursor = response.context["page"].next_cursor
    second = _ids(rclient.get(QUEUE, {"status": "all", "sort": sort, "after": cursor}))
    assert first + second == expected(dialogues)


def test_an_ordering_by_a_computed_key_is_one_table_entry(rclient, monkeypatch):
    dialogues = [dialogue_with_turns(n) for n in (2, 5, 3, 5, 1)]
    longest = QueueOrdering(
        "Longest first", ("n_turns", "id"), descending=True,
        annotations={"n_turns": lambda: Count("turns")},
    )  # fmt: skip
    monkeypatch.setitem(QUEUE_ORDERINGS, "longest", longest)
    response = rclient.get(QUEUE, {"sort": "longest"})
    expected = sorted(dialogues, key=lambda d: (-d.turns.count(), -d.pk))
    assert _ids(response) == [d.pk for d in expected]
    page = queue_page(QueueFilters(ordering="longest"), user=response.wsgi_request.user, size=2)
    seen = [d.pk for d in page.rows]
    while page.next_cursor:
        page = queue_page(QueueFilters(ordering="longest"), user=response.wsgi_request.user,
                          size=2, after=page.next_cursor)  # fmt: skip
        seen += [d.pk for d in page.rows]
    assert seen == [d.pk for d in expected]


# Not base64, an empty list, [1, true], and ["x", 1] (a topic where a run id belongs).
@pytest.mark.parametrize("cursor", ["garbage!", "W10", "WzEsIHRydWVd", "WyJ4IiwgMV0"])
def test_a_mangled_cursor_shows_the_first_page(rclient, cursor):
    dialogues = _dialogues(3)
    response = rclient.get(QUEUE, {"after": cursor})
    assert response.status_code == 200 and _ids(response) == [d.pk for d in dialogues]
    assert decode_cursor("WyJ4IiwgMV0", QUEUE_ORDERINGS["topic"]) == ["x", 1]


# --- Search and filters ----------------------------------------------------------------------


def test_search_by_topic_id_and_turn_text(rclient):
    a, b, c = _dialogues(3)
    turn = turn_of(c, 0)
    turn.text = "The hypotenuse is the longest side of a right triangle."
    turn.save()
    assert _ids(rclient.get(QUEUE, {"q": "topic 001"})) == [b.pk]
    assert _ids(rclient.get(QUEUE, {"q": f"#{a.pk}"})) == [a.pk]
    # Full-text on PostgreSQL (stemmed: "triangles" finds "triangle"), substring elsewhere.
    assert _ids(rclient.get(QUEUE, {"q": "hypotenuse"})) == [c.pk]
    assert _ids(rclient.get(QUEUE, {"q": "no such words anywhere"})) == []
    # The original text a correction replaced is not searched: only what would be exported.
    turn.text = "Corrected."
    turn.save()
    assert _ids(rclient.get(QUEUE, {"q": "hypotenuse"})) == []


def test_flag_and_assignee_filters_and_counts(rclient, reviewer, admin_user):
    plain, flagged, dismissed, mine = _dialogues(4)
    Flag.objects.create(turn=turn_of(flagged, 0), category="tone", created_by=reviewer)
    Flag.objects.create(
        turn=turn_of(dismissed, 0), category="tone", created_by=reviewer, resolution="dismissed"
    )
    services.reviews_assign(dialogue_ids=[mine.pk], actor=admin_user, assignee=reviewer)
    assert _ids(rclient.get(QUEUE, {"flags": "open"})) == [flagged.pk]
    assert _ids(rclient.get(QUEUE, {"flags": "any"})) == [flagged.pk, dismissed.pk]
    assert _ids(rclient.get(QUEUE, {"flags": "none"})) == [plain.pk, mine.pk]
    assert _ids(rclient.get(QUEUE, {"assignee": "me"})) == [mine.pk]
    assert _ids(rclient.get(QUEUE, {"assignee": f"u:{reviewer.pk}"})) == [mine.pk]
    assert _ids(rclient.get(QUEUE, {"assignee": "none"})) == [plain.pk, flagged.pk, dismissed.pk]
    services.review_claim_next(actor=reviewer)  # takes `mine`: assigned work comes first
    response = rclient.get(QUEUE, {"flags": "none"})
    assert response.context["counts"] == {
        "awaiting": 1, "in_review": 1, "adjudication": 0, "approved": 0, "rejected": 0, "all": 2,
    }  # fmt: skip
    body = rclient.get(QUEUE, {"status": "all"}).content.decode()
    assert reviewer.username in body  # the assignee column


# --- Bulk actions ----------------------------------------------------------------------------


def test_staff_bulk_assign_release_and_reject(client, admin_user, reviewer):
    a, b, c = _dialogues(3)
    group = Group.objects.create(name="Cardiology experts")
    client.force_login(admin_user)
    bulk = reverse("review:bulk")
    back = f"{QUEUE}?status=all"
    response = client.post(bulk, {"ids": [a.pk, b.pk], "action": "assign",
                                  "assignee": f"u:{reviewer.pk}", "next": back})  # fmt: skip
    assert response.status_code == 302 and response["Location"] == back
    assert list(
        DialogueReview.objects.filter(assigned_to=reviewer).values_list("pk", flat=True)
    ) == [a.pk, b.pk]
    client.post(bulk, {"ids": [c.pk], "action": "assign", "assignee": f"g:{group.pk}"})
    assert DialogueReview.objects.get(pk=c.pk).assigned_group == group
    assert ReviewEvent.objects.filter(kind="assign").count() == 3

    services.review_claim_next(actor=reviewer)
    client.post(bulk, {"ids": [a.pk, b.pk], "action": "release"})
    assert not DialogueReview.objects.filter(claimed_by__isnull=False).exists()

    DialogueReview.objects.filter(pk=b.pk).update(status="approved")
    response = client.post(
        bulk, {"ids": [a.pk, b.pk], "action": "reject", "reason": ""}, follow=True
    )
    assert "Say why these dialogues are rejected" in response.content.decode()
    response = client.post(
        bulk, {"ids": [a.pk, b.pk], "action": "reject", "reason": "Broken run"}, follow=True
    )
    assert "Rejected 1 of 2 dialogue(s)." in response.content.decode()
    assert DialogueReview.objects.get(pk=a.pk).reason == "Broken run"
    assert DialogueReview.objects.get(pk=b.pk).status == "approved"  # decided: left alone


def test_bulk_actions_are_for_staff_only(rclient, dialogue):
    response = rclient.post(reverse("review:bulk"), {"ids": [dialogue.pk], "action": "release"})
    assert response.status_code == 403
    assert "bulk-form" not in rclient.get(QUEUE).content.decode()
    with pytest.raises(NotAllowed):
        services.reviews_assign(dialogue_ids=[dialogue.pk], actor=UserFactory(reviewer=True))


def test_bulk_with_an_unknown_assignee_or_nothing_ticked_says_why(client, admin_user, dialogue):
    client.force_login(admin_user)
    response = client.post(reverse("review:bulk"), {"action": "release"}, follow=True)
    assert "ids: This field is required." in response.content.decode()
    response = client.post(reverse("review:bulk"), {"ids": [dialogue.pk], "action": "assign",
                                                    "assignee": "u:999999"}, follow=True)  # fmt: skip
    assert "assignee: Select a valid choice" in response.content.decode()


# --- Review domains and assignment -----------------------------------------------------------


def test_review_policy_limits_queue_review_next_and_claims_to_its_groups(
    client, reviewer, admin_user
):
    cardiology = Group.objects.create(name="Cardiology experts")
    doctor = UserFactory(reviewer=True)
    doctor.groups.add(cardiology)
    medical, maths = _dialogues(1)[0], _dialogues(1)[0]
    ReviewPolicy.objects.create(scenario=medical.scenario).groups.add(cardiology)
    client.force_login(reviewer)
    assert _ids(client.get(QUEUE)) == [maths.pk]
    with pytest.raises(NotAllowed, match="reviewed by other reviewer groups"):
        services.turn_flag(dialogue_id=medical.pk, turn_id=turn_of(medical, 0).pk,
                           actor=reviewer, category="tone")  # fmt: skip
    assert services.review_claim_next(actor=reviewer).pk == maths.pk
    assert services.review_claim_next(actor=doctor).pk == medical.pk
    client.force_login(admin_user)
    assert _ids(client.get(QUEUE, {"status": "all"})) == [medical.pk, maths.pk]


def test_a_run_policy_replaces_its_scenarios(reviewer):
    cardiology = Group.objects.create(name="Cardiology experts")
    restricted = _dialogues(1)[0]
    open_run = dialogue_with_turns(1, run=RunFactory(scenario=restricted.scenario))
    ReviewPolicy.objects.create(scenario=restricted.scenario).groups.add(cardiology)
    ReviewPolicy.objects.create(run=open_run.run)  # no groups: every reviewer
    page = queue_page(QueueFilters(), user=reviewer)
    assert [d.pk for d in page.rows] == [open_run.pk]


def test_review_next_offers_assigned_work_first_and_never_someone_elses(reviewer, admin_user):
    free, others, mine, group_work = _dialogues(4)
    colleague = UserFactory(reviewer=True)
    team = Group.objects.create(name="Maths teachers")
    reviewer.groups.add(team)
    services.reviews_assign(dialogue_ids=[others.pk], actor=admin_user, assignee=colleague)
    services.reviews_assign(dialogue_ids=[mine.pk], actor=admin_user, assignee=reviewer)
    services.reviews_assign(dialogue_ids=[group_work.pk], actor=admin_user, group=team)
    claimed = []
    for _ in range(4):
        dialogue = services.review_claim_next(actor=reviewer)
        if dialogue is None:
            break
        claimed.append(dialogue.pk)
        services.review_release(dialogue_id=dialogue.pk, actor=reviewer)
        DialogueReview.objects.filter(pk=dialogue.pk).update(status="approved")
    assert claimed == [mine.pk, group_work.pk, free.pk]


def test_my_reviews_lists_held_assigned_and_decided(rclient, reviewer, admin_user):
    held, assigned, decided, other = _dialogues(4)
    services.reviews_assign(
        dialogue_ids=[assigned.pk, held.pk], actor=admin_user, assignee=reviewer
    )
    services.review_claim_next(actor=reviewer)  # held (assigned, first in queue order)
    services.dialogue_reject(
        dialogue_id=decided.pk, actor=reviewer, reason="Off-topic", expected_version=1
    )
    response = rclient.get(reverse("review:mine"))
    mine = response.context["mine"]
    assert [r.pk for r in mine.held] == [held.pk]
    assert [r.pk for r in mine.assigned] == [assigned.pk]
    assert [r.pk for r in mine.decided] == [decided.pk]
    body = response.content.decode()
    assert url("dialogue", decided) in body and "Off-topic" in body and f"#{other.pk}" not in body


# --- Approve and next; the activity timeline -------------------------------------------------


def test_approve_and_next_approves_then_opens_the_next_dialogue(rclient, reviewer):
    first, second = _dialogues(2)
    services.review_claim_next(actor=reviewer)
    response = rclient.post(reverse("review:approve_next", args=[first.pk]), {"version": 1})
    assert response.status_code == 302 and response["Location"] == url("dialogue", second)
    assert DialogueReview.objects.get(pk=first.pk).status == "approved"
    assert DialogueReview.objects.get(pk=second.pk).claimed_by == reviewer
    response = rclient.post(reverse("review:approve_next", args=[second.pk]), {"version": 1}, **HX)
    assert response.status_code == 200 and response["HX-Location"]
    assert "/review/" in response["HX-Location"]  # nothing left: back to the queue


def test_approve_and_next_with_an_open_flag_stays_with_the_reason(rclient, reviewer):
    first, second = _dialogues(2)
    services.turn_flag(
        dialogue_id=first.pk, turn_id=turn_of(first, 0).pk, actor=reviewer, category="tone"
    )
    response = rclient.post(reverse("review:approve_next", args=[first.pk]), {"version": 2}, **HX)
    assert response.status_code == 409 and "flag(s) still open" in response.content.decode()
    assert DialogueReview.objects.get(pk=first.pk).status == "pending"
    assert not DialogueReview.objects.filter(pk=second.pk).exists()


def test_activity_lists_flags_dismissals_corrections_and_reverts_with_authors(rclient, reviewer):
    dialogue = dialogue_with_turns(3)
    turn = turn_of(dialogue, 1)
    ids = {"dialogue_id": dialogue.pk, "turn_id": turn.pk, "actor": reviewer}
    flag = services.turn_flag(**ids, category="factual", note="wrong identity")
    services.flag_dismiss(**ids, flag_id=flag.pk, reason="It is fine after all")
    services.turn_correct(**ids, text="Better.", expected_version=1)
    services.turn_revert(**ids, expected_version=2)
    response = rclient.get(url("dialogue", dialogue))
    timeline = response.context["dialogue"].timeline
    assert [item.what for item in timeline] == [
        "Reverted turn 2", "Corrected turn 2", "Dismissed a flag on turn 2",
        "Flagged turn 2 (factual error)", "Claimed",
    ]  # fmt: skip
    assert {item.actor for item in timeline} == {reviewer}
    body = response.content.decode()
    assert "It is fine after all" in body and "Dismissed a flag on turn 2" in body
