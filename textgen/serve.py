"""``serve``: the command SageMaker runs (``docker run IMAGE serve``); execs gunicorn with textgen's config."""

from __future__ import annotations

import os
import sys

from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    """Check the configuration, then replace this process with gunicorn (so SIGTERM reaches it)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        Settings.from_env()
    except SettingsError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "gunicorn", "-c", "python:textgen.gunicorn_conf", *args, "textgen:create_app()"]
    os.execv(sys.executable, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
