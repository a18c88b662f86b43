# One image for the web server and the Celery workers (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock

COPY . .
# collectstatic needs settings to load; these values exist only for the build step.
RUN SECRET_KEY=build-only DEBUG=0 python manage.py collectstatic --noinput -v 0

RUN useradd --create-home synthreview && mkdir -p /app/media && chown synthreview /app/media
USER synthreview
EXPOSE 8000
CMD ["gunicorn", "synthreview.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
