#!/bin/sh
# Entry point of the textgen image. SageMaker starts the container as `docker run IMAGE serve`;
# the command given (default: serve) replaces this shell, so it runs as PID 1 and receives
# SIGTERM from `docker stop` directly (serve execs gunicorn, which shuts down gracefully).
set -e
if [ "$#" -eq 0 ]; then
    set -- serve
fi
exec "$@"
