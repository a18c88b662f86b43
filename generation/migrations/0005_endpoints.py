import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import generation.models


def create_default_endpoint(apps, schema_editor):
    """Today's environment settings become the endpoint named "default", and every persona
    calls it, so an existing or fresh install needs no admin step."""
    Endpoint = apps.get_model("generation", "Endpoint")
    Persona = apps.get_model("generation", "Persona")
    endpoint, _ = Endpoint.objects.get_or_create(
        name="default", defaults={"api_key_env": "OPENAI_API_KEY"}
    )
    Persona.objects.update(endpoint=endpoint)


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0004_variables"),
    ]

    operations = [
        migrations.CreateModel(
            name="Endpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.SlugField(max_length=100, unique=True)),
                ("base_url", models.URLField(blank=True, help_text="e.g. https://api.openai.com/v1 or http://gpu-host:8000/v1. Empty: OPENAI_BASE_URL (and with no key either: the offline demo provider).")),
                ("api_key_env", models.CharField(blank=True, help_text="Name of the environment variable holding the key (the key itself is never stored or shown). Empty: the server needs no key.", max_length=100, validators=[generation.models.env_var_name], verbose_name="API key variable")),
                ("default_model", models.CharField(blank=True, help_text="Empty: SYNTHREVIEW_LLM_MODEL.", max_length=200)),
                ("max_concurrent", models.PositiveIntegerField(blank=True, help_text="Across every run and worker. Empty: only each run's own cap.", null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(100000)], verbose_name="max concurrent requests")),
                ("requests_per_minute", models.PositiveIntegerField(blank=True, help_text="Empty: learned from the server's x-ratelimit-* headers, if it sends them.", null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(100000000)])),
                ("tokens_per_minute", models.PositiveIntegerField(blank=True, help_text="Prompt and completion tokens. Empty: learned from the headers, if any.", null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(2000000000)])),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.AddField(
            model_name="persona",
            name="endpoint",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="personas", to="generation.endpoint"),
        ),
        migrations.RunPython(create_default_endpoint, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="persona",
            name="endpoint",
            field=models.ForeignKey(default=generation.models.default_endpoint_id, help_text="The server this persona's turns come from.", on_delete=django.db.models.deletion.PROTECT, related_name="personas", to="generation.endpoint"),
        ),
        migrations.AlterField(
            model_name="persona",
            name="model",
            field=models.CharField(blank=True, help_text="Empty: the endpoint's default model, else SYNTHREVIEW_LLM_MODEL.", max_length=200),
        ),
        migrations.AddField(
            model_name="generationrun",
            name="endpoint_override",
            field=models.ForeignKey(blank=True, help_text="Both personas call this endpoint instead of their own.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="generation.endpoint"),
        ),
    ]
