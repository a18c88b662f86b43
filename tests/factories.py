"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import factory
from django.contrib.auth.models import Group, User

from generation.models import Dialogue, GenerationRun, Persona, Scenario, Side, Turn
from review.models import REVIEWER_GROUP


class UserFactory(factory.django.DjangoModelFactory):
    """`UserFactory(reviewer=True)` adds the Reviewer group; the password is "pw"."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")

    @factory.post_generation
    def password(obj, create, extracted, **kwargs):
        obj.set_password(extracted or "pw")
        if create:
            obj.save(update_fields=["password"])

    @factory.post_generation
    def reviewer(obj, create, extracted, **kwargs):
        if create and extracted:
            group, _ = Group.objects.get_or_create(name=REVIEWER_GROUP)
            obj.groups.add(group)


class ScenarioFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Scenario
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"scenario-{n}")
    name = factory.Sequence(lambda n: f"Scenario {n}")
    opening_instruction = "Let's talk about {topic}."
    topics = factory.LazyFunction(lambda: ["the unit circle", "sine rule", "cosine rule"])
    min_turns = 2
    max_turns = 6

    @factory.post_generation
    def personas(obj, create, extracted, **kwargs):
        if not create or extracted is False:
            return
        PersonaFactory(
            scenario=obj,
            position=0,
            name="Teacher",
            side=Side.ASSISTANT,
            opens=False,
            system_prompt="You are a patient maths teacher.",
        )
        PersonaFactory(
            scenario=obj,
            position=1,
            name="Student",
            side=Side.USER,
            opens=True,
            system_prompt="You are a student learning trigonometry.",
        )


class PersonaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Persona

    scenario = factory.SubFactory(ScenarioFactory, personas=False)
    position = 0
    name = "Teacher"
    side = Side.ASSISTANT
    system_prompt = "You are a helpful persona."


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationRun

    scenario = factory.SubFactory(ScenarioFactory)
    requested_count = 1
    provider = "demo"


class DialogueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dialogue

    run = factory.SubFactory(RunFactory)
    scenario = factory.SelfAttribute("run.scenario")
    index = factory.Sequence(lambda n: n)
    topic = "the unit circle"
    status = Dialogue.Status.COMPLETE


class TurnFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Turn

    dialogue = factory.SubFactory(DialogueFactory)
    position = factory.Sequence(lambda n: n)
    persona = factory.LazyAttribute(
        lambda t: t.dialogue.scenario.personas.get(position=t.position % 2)
    )
    side = factory.LazyAttribute(lambda t: t.persona.side)
    original_text = factory.Sequence(lambda n: f"Turn text {n}.")
    text = factory.LazyAttribute(lambda t: t.original_text)


def dialogue_with_turns(n_turns: int = 4, **kwargs) -> Dialogue:
    """A complete dialogue with `n_turns` alternating turns."""
    dialogue = DialogueFactory(**kwargs)
    for position in range(n_turns):
        TurnFactory(dialogue=dialogue, position=position)
    return dialogue
