"""Request ids in log lines: the caller's X-Amzn-SageMaker-Inference-Id (or X-Request-Id) tags them."""

from __future__ import annotations

import contextvars
import logging

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("textgen_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``%(request_id)s`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
