"""gunicorn reads this file when started from the repository root (``gunicorn wsgi:app``).

The settings live in the package, so the installed ``serve`` command uses the very same ones.
"""

from textgen.gunicorn_conf import *  # noqa: F401,F403
from textgen.gunicorn_conf import post_worker_init  # noqa: F401  (hooks are looked up by name)
