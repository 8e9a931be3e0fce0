"""Prefect flows composing the tasks in ``tasks/``; deployments and schedules in ``flows/deploy.py``."""
