"""textgen: a SageMaker-compatible text-generation service for GPT-2-class causal language models."""

from __future__ import annotations

from flask import Flask

from .settings import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None, generator=None) -> Flask:
    """Build the Flask app. Loads nothing heavy: the model holder is created here but loads only
    when started (gunicorn's post_worker_init), or a ready ``generator`` is injected (tests)."""
    from . import api, errors
    from .schemas import Limits

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.config["TEXTGEN_SETTINGS"] = settings
    app.config["TEXTGEN_LIMITS"] = Limits(
        max_beams=settings.max_beams,
        max_return_sequences=settings.max_return_sequences,
        max_total_tokens=settings.max_total_tokens,
    )
    if generator is None:
        from .batching import BatchingEngine
        from .model import ModelHolder

        generator = BatchingEngine(ModelHolder(settings), settings)
    app.extensions["textgen"] = generator
    errors.init_app(app)
    app.register_blueprint(api.bp)
    return app
