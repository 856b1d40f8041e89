"""WSGI entry point: ``gunicorn wsgi:app`` (the model loads per worker, see gunicorn.conf.py)."""

from textgen import create_app

app = create_app()
