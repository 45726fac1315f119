"""Celery workers: claim jobs from the database and run them in child processes."""
