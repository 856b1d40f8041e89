"""gunicorn settings and hooks for textgen (module names are gunicorn settings).

Read in the master process, so it imports only ``textgen.settings``: no torch, and never a CUDA
call (a CUDA context made before fork breaks every worker). Each worker starts loading its own
model in ``post_worker_init``, after the fork.
"""

import json

from gunicorn import util as _gunicorn_util

from textgen.settings import Settings

_settings = Settings.from_env()


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot parse (bad request line, header limits, a broken
    chunk), in textgen's JSON error shape instead of gunicorn's HTML page."""
    body = json.dumps(
        {
            "code": int(status_int),
            "error": "bad_request" if int(status_int) < 500 else "internal",
            "message": f"{reason}: {mesg}" if mesg else str(reason),
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    _gunicorn_util.write_nonblock(sock, head + body)


_gunicorn_util.write_error = _write_json_error


bind = f"0.0.0.0:{_settings.port}"
# A model per worker: one per GPU, or one on CPU (a second CPU copy would only split the cores).
workers = _settings.worker_count
# Threads keep /ping answering while generation runs, and let concurrent requests reach the model.
worker_class = "gthread"
threads = _settings.threads
# The worker heartbeat runs beside loading and generation, so this only has to outlast a stall.
timeout = _settings.timeout
graceful_timeout = 25  # SageMaker sends SIGKILL 30 s after SIGTERM
keepalive = 75  # longer than the idle timeout of SageMaker's front end, so it closes first
preload_app = False  # never import the model stack in the master
loglevel = _settings.log_level
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms id=%({x-request-id}o)s'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "textgen.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s [%(request_id)s]: %(message)s"}
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "textgen": {"level": _settings.log_level.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.error": {"level": _settings.log_level.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}


def post_worker_init(worker):
    """Start this worker's model loading in the background; /ping answers 503 until it is ready."""
    holder = worker.wsgi.extensions["textgen"]
    holder.start(worker_index=worker.age - 1, worker_count=worker.cfg.workers)
