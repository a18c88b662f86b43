"""Dashboard pages: who may see them, their query counts, htmx partials, CSV downloads."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from generation.models import Dialogue, GenerationRun
from review.insights import panels
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.review.helpers import HX
from tests.review.test_insights import build_world

pytestmark = pytest.mark.django_db

# Session, user, reviewer check, the run; the board: done exports, funnel, flags by turn,
# judge's marks, expert's marks, judged turns, stop reasons, turn usage (warnings, latency,
# tokens), approved dialogues with pending cost, rolled-up run cost; diversity (signatures,
# vocabulary, topics used, topics listed); variables (definitions, the run's coverage options,
# one per variable: here one).
RUN_PAGE_QUERIES = 21
# Session, user, reviewer check, the scenario, active runs; the board: exports, funnel,
# dialogues by run, flags by run, flags by turn, the judge (3), turns by model, flags by model,
# stop reasons, turn usage, approved with pending cost, run cost; diversity 4; variables 2.
SCENARIO_PAGE_QUERIES = 25
# The same without the scenario, plus the list of scenarios.
OVERVIEW_QUERIES = 25
# Session, user (staff need no group check); backlog count, verdicts per day, verdicts per
# reviewer, corrections per reviewer, the median durations.
TEAM_PAGE_QUERIES = 7


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True, username="lead")


def _pages(world):
    return {
        "run": reverse("review:insights_run", args=[world.run.pk]),
        "scenario": reverse("review:insights_scenario", args=[world.run.scenario_id]),
        "overview": reverse("review:insights"),
    }


def _more_of_everything(world, n=6):
    """More dialogues, turns, flags and verdicts in the same run and scenario."""
    for index in range(10, 10 + n):
        dialogue_with_turns(5, run=world.run, index=index)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("run", RUN_PAGE_QUERIES),
        ("scenario", SCENARIO_PAGE_QUERIES),
        ("overview", OVERVIEW_QUERIES),
    ],
)
def test_query_count_is_constant(
    client, reviewer, world, page, expected, django_assert_max_num_queries
):
    client.force_login(reviewer)
    path = _pages(world)[page]
    counts = []
    for grow in (False, True):
        if grow:
            _more_of_everything(world)
        with django_assert_max_num_queries(expected) as captured:
            response = client.get(path)
        assert response.status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts == [expected, expected]


def test_team_page_query_count_is_constant(client, staff, world, django_assert_max_num_queries):
    client.force_login(staff)
    counts = []
    for grow in (False, True):
        if grow:
            build_world("-2")  # a second scenario's runs, reviews and events
        with django_assert_max_num_queries(TEAM_PAGE_QUERIES) as captured:
            response = client.get(reverse("review:insights_team"))
        assert response.status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts == [TEAM_PAGE_QUERIES, TEAM_PAGE_QUERIES]


def test_outsider_gets_403_everywhere(client, world):
    client.force_login(UserFactory())
    paths = [*_pages(world).values(), reverse("review:insights_team")]
    paths += [reverse("review:insights_run_csv", args=[world.run.pk, "funnel"])]
    paths += [reverse("review:insights_team_csv", args=["backlog"])]
    for path in paths:
        assert client.get(path).status_code == 403, path


def test_anonymous_is_sent_to_log_in(client, world):
    response = client.get(_pages(world)["run"])
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_reviewer_sees_run_and_scenario_figures_but_not_the_team(client, reviewer, world):
    client.force_login(reviewer)
    for path in _pages(world).values():
        response = client.get(path)
        assert response.status_code == 200
        assert response.content.decode().count('<svg class="plot') >= 5
    assert client.get(reverse("review:insights_team")).status_code == 403
    assert client.get(reverse("review:insights_team_csv", args=["per-hour"])).status_code == 403
    assert (
        'href="/review/insights/team/"'
        not in client.get(_pages(world)["overview"]).content.decode()
    )


def test_staff_sees_the_team_page(client, staff, world):
    client.force_login(staff)
    page = client.get(reverse("review:insights_team"), {"days": "7"}).content.decode()
    assert "alice" in page and "bob" in page and "Clears" in page
    assert page.count('<svg class="plot') == 4


def test_htmx_poll_returns_only_the_board_and_polls_while_live(client, reviewer, world):
    client.force_login(reviewer)
    path = _pages(world)["run"]
    board = client.get(path, HTTP_HX_TARGET="insights-board", **HX).content.decode()
    assert board.lstrip().startswith('<section id="insights-board"')
    assert "<html" not in board and "hx-trigger" not in board  # the run is not live
    GenerationRun.objects.filter(pk=world.run.pk).update(status="running")
    board = client.get(path, HTTP_HX_TARGET="insights-board", **HX).content.decode()
    assert 'hx-trigger="every 5s"' in board and f'hx-get="{path}"' in board


def test_run_page_loads_the_dashboard(client, reviewer, world):
    client.force_login(reviewer)
    page = client.get(reverse("generation:run_detail", args=[world.run.pk])).content.decode()
    insights = _pages(world)["run"]
    assert f'hx-get="{insights}" hx-trigger="load"' in page
    assert f'<a href="{insights}">' in page  # works without JavaScript too


def test_csv_has_the_panel_rows(client, reviewer, world):
    client.force_login(reviewer)
    response = client.get(reverse("review:insights_run_csv", args=[world.run.pk, "funnel"]))
    assert response["Content-Type"] == "text/csv"
    assert f"run-{world.run.pk}-funnel.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["Stage", "Dialogues", "% of generated"]
    assert rows[1:] == [
        ["Generated", "4", "100.0"], ["Reviewed", "3", "75.0"], ["Approved", "2", "50.0"],
        ["Rejected", "1", "25.0"], ["Exported", "1", "25.0"],
    ]  # fmt: skip


def test_every_panel_has_a_working_csv(client, staff, world):
    client.force_login(staff)
    boards = [
        ("review:insights_run_csv", [world.run.pk], panels.RUN_BOARD),
        ("review:insights_scenario_csv", [world.run.scenario_id], panels.SCENARIO_BOARD),
        ("review:insights_all_csv", [], panels.SCENARIO_BOARD),
        ("review:insights_team_csv", [], panels.TEAM_BOARD),
    ]
    for name, args, board in boards:
        for panel in board:
            response = client.get(reverse(name, args=[*args, panel.slug]))
            assert response.status_code == 200, (name, panel.slug)
            assert len(response.content.decode().splitlines()) >= 2, (name, panel.slug)
    assert (
        client.get(reverse("review:insights_run_csv", args=[world.run.pk, "nope"])).status_code
        == 404
    )
    assert client.get(reverse("review:insights_run_csv", args=[99999, "funnel"])).status_code == 404


def test_untrusted_names_are_escaped_in_svg_and_csv(client, reviewer, db):
    dialogue = dialogue_with_turns(2, run=RunFactory())
    dialogue.turns.update(model="<script>alert(1)</script>")
    Dialogue.objects.filter(pk=dialogue.pk).update(stop_reason='=HYPERLINK("x")')
    client.force_login(reviewer)
    page = client.get(reverse("review:insights_scenario", args=[dialogue.scenario_id])).content
    assert b"<script>alert" not in page and b"&lt;script&gt;alert(1)&lt;/script&gt;" in page
    response = client.get(
        reverse("review:insights_run_csv", args=[dialogue.run_id, "stop-reasons"])
    )
    # A spreadsheet would run the model's text as a formula; the apostrophe stops it.
    assert "'=HYPERLINK" in response.content.decode()


def test_model_comparison_follows_the_form(client, reviewer, world):
    client.force_login(reviewer)
    path = _pages(world)["scenario"]
    page = client.get(path, {"a": "teacher-c", "b": "student-b"}).content.decode()
    assert '<option value="teacher-c" selected>' in page
    csv_path = reverse(
        "review:insights_scenario_csv", args=[world.run.scenario_id, "models-compare"]
    )
    assert f"{csv_path}?a=teacher-c&amp;b=student-b" in page
    rows = list(
        csv.reader(
            io.StringIO(client.get(csv_path, {"a": "teacher-c", "b": "student-b"}).content.decode())
        )
    )
    assert rows[0] == ["Per 100 turns", "teacher-c", "student-b"]
