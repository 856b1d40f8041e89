#!/usr/bin/env bash
# End-to-end test of the built image, run the way SageMaker runs it:
#   podman run --network host -e SAGEMAKER_BIND_TO_PORT=PORT -v MODEL_DIR:/opt/ml/model:ro IMAGE serve
# then: /ping within START_TIMEOUT s (the container must stay alive meanwhile), gunicorn is PID 1,
# `make smoke-test`, an application/jsonlines batch with one bad line, an oversize body (413),
# and `podman stop -t 30` ending with exit code 0 in well under 30 s. The container is always
# removed; its log is printed when a check fails.
#
# Environment:
#   IMAGE          image to test (default localhost/textgen:local; build it with container/build.sh)
#   MODEL_DIR      model folder mounted at /opt/ml/model (default .model/smollm2-135m-instruct;
#                  `make model` makes it), or `none` to mount nothing: the image must then bring its
#                  own model (built with BAKE_MODEL=1)
#   PORT           host port to use (default: a free one)
#   START_TIMEOUT  seconds allowed for /ping to answer 200 (default 300)
set -euo pipefail
# shellcheck source=container/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_setup

MODEL_DIR="${MODEL_DIR:-$REPO_ROOT/.model/smollm2-135m-instruct}"
START_TIMEOUT="${START_TIMEOUT:-300}"
STOP_TIMEOUT=30
mount=()
if [ "$MODEL_DIR" = none ]; then
    model_desc="no model mounted (the image's own)"
else
    [ -f "$MODEL_DIR/config.json" ] || die "no model folder at $MODEL_DIR (run 'make model' or set MODEL_DIR)"
    MODEL_DIR="$(cd "$MODEL_DIR" && pwd)"
    mount=(-v "$MODEL_DIR:/opt/ml/model:ro")
    model_desc="$MODEL_DIR at /opt/ml/model"
fi
podman image exists "$IMAGE" || die "image $IMAGE does not exist: run container/build.sh first"
command -v curl >/dev/null || die "curl is missing: run container/setup.sh"

if [ -z "${PORT:-}" ]; then
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
        || die "cannot find a free port"
fi
URL="http://127.0.0.1:$PORT"
NAME="textgen-test-$$"
work="$(mktemp -d "$TMPDIR/test.XXXXXX")"
passed=0

cleanup() {
    local rc=$?
    # By name: a container that `podman run` created but could not start has no id here.
    if podman container exists "$NAME" 2>/dev/null; then
        podman logs "$NAME" >"$CONTAINER_CACHE_DIR/test-container.log" 2>&1 || true
        if [ "$rc" != 0 ]; then
            log "container log without /ping access lines (last 80; all: $CONTAINER_CACHE_DIR/test-container.log):"
            grep -v '"GET /ping ' "$CONTAINER_CACHE_DIR/test-container.log" | tail -n 80 >&2 || true
        fi
        podman rm --force --time 0 "$NAME" >/dev/null 2>&1 || { log "ERROR: could not remove container $NAME"; rc=1; }
    fi
    rm -rf "$work"
    if [ "$rc" = 0 ]; then log "all $passed container checks passed"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); log "PASS  $*"; }
fail() { die "FAIL  $*"; }

# POST FILE to /invocations; writes the body to $work/out, the headers to $work/headers; prints
# the status code. Extra curl arguments follow FILE.
post() {
    local file="$1"
    shift
    curl --silent --show-error --max-time 300 -H 'Expect:' --data-binary "@$file" \
        -o "$work/out" -D "$work/headers" -w '%{http_code}' "$@" "$URL/invocations"
}
header() { # NAME: value of response header NAME in $work/headers (lower-cased name match)
    awk -v name="$1" -F': *' \
        'tolower($1) == tolower(name) { sub(/\r$/, "", $2); print $2; exit }' "$work/headers"
}

# --- start ----------------------------------------------------------------------------------
log "starting $IMAGE on port $PORT with $model_desc"
t_start="$(now)"
cid="$(podman run --detach --name "$NAME" --network host \
    -e "SAGEMAKER_BIND_TO_PORT=$PORT" \
    "${mount[@]}" \
    "$IMAGE" serve)" || die "podman run failed"

deadline=$(($(date +%s) + START_TIMEOUT))
while :; do
    code="$(curl --silent --max-time 2 -o "$work/ping" -w '%{http_code}' "$URL/ping" || true)"
    [ "$code" = 200 ] && break
    # The server stays up and answers 503 when loading failed: no point waiting for the deadline.
    if [ "$code" = 503 ] && grep -qi 'failed' "$work/ping"; then
        fail "/ping answered 503: $(head -c 400 "$work/ping")"
    fi
    running="$(podman inspect --format '{{.State.Running}}' "$cid")" || die "podman inspect $cid failed"
    if [ "$running" != true ]; then
        fail "container exited before /ping answered 200 (exit code $(podman inspect --format '{{.State.ExitCode}}' "$cid"))"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "/ping did not answer 200 within ${START_TIMEOUT}s (last status: ${code:-none})"
    sleep 1
done
start_s="$(elapsed "$t_start")"
pass "GET /ping 200 after ${start_s}s (from podman run)"

# SIGTERM from `docker stop` must reach gunicorn directly: it has to be PID 1.
pid1="$(podman exec "$cid" cat /proc/1/cmdline | tr '\0' ' ')" || fail "cannot read PID 1 of the container"
case "$pid1" in
    *gunicorn*) pass "PID 1 is gunicorn ($pid1)" ;;
    *) fail "PID 1 is '$pid1', not gunicorn: SIGTERM would not reach the server" ;;
esac

# --- the project's smoke test -----------------------------------------------------------------
make -C "$REPO_ROOT" --no-print-directory smoke-test URL="$URL" || fail "make smoke-test URL=$URL"
pass "make smoke-test"

# --- batch transform: application/jsonlines with one bad line ---------------------------------
printf '%s\n' \
    '{"input": "Once upon a time", "mode": "greedy", "max_length": 16}' \
    '{"input": "x", "top_p": 1.5}' \
    '{"input": "The weather today", "mode": "greedy", "max_length": 16}' >"$work/batch.jsonl"
status="$(post "$work/batch.jsonl" -H 'Content-Type: application/jsonlines' -H 'Accept: application/jsonlines')" \
    || fail "jsonlines request failed (curl)"
[ "$status" = 200 ] || fail "jsonlines batch: status $status, expected 200: $(head -c 300 "$work/out")"
ctype="$(header content-type)"
case "$ctype" in
    application/jsonlines*) ;;
    *) fail "jsonlines batch: Content-Type '$ctype', expected application/jsonlines" ;;
esac
python3 - "$work/out" <<'PY' || fail "jsonlines batch: wrong answer (see above)"
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
lines = raw.split("\n")
if lines and lines[-1] == "":
    lines.pop()  # one trailing newline is fine
assert len(lines) == 3, f"expected 3 output lines, got {len(lines)}: {raw[:300]!r}"
rows = [json.loads(line) for line in lines]
for index, prompt in ((0, "Once upon a time"), (2, "The weather today")):
    row = rows[index]
    assert isinstance(row, list) and len(row) == 1, f"line {index + 1}: expected a list of 1 string, got {row!r:.200}"
    assert isinstance(row[0], str) and row[0].startswith(prompt), f"line {index + 1}: {row[0]!r:.100}"
bad = rows[1]
assert isinstance(bad, dict), f"line 2: expected an error object, got {bad!r:.200}"
assert bad.get("code") == 400 and isinstance(bad.get("error"), str) and isinstance(bad.get("message"), str), \
    f"line 2: not the JSON error shape (code 400, error, message): {bad!r:.200}"
assert "top_p" in (bad.get("fields") or {}), f"line 2: error does not name top_p: {bad!r:.200}"
print(f"  lines 1 and 3 generated, line 2: {bad['message'][:70]}", file=sys.stderr)
PY
pass "application/jsonlines batch of 3 with a bad middle line -> 3 lines, middle an error object"

# --- oversize body ----------------------------------------------------------------------------
python3 -c '
import json, sys
sys.stdout.write(json.dumps({"input": "a" * (6 * 1024 * 1024 + 1024)}))' >"$work/big.json"
status="$(post "$work/big.json" -H 'Content-Type: application/json')" || fail "oversize request failed (curl)"
[ "$status" = 413 ] || fail "oversize body ($(wc -c <"$work/big.json") bytes): status $status, expected 413"
python3 - "$work/out" <<'PY' || fail "oversize body: the 413 answer is not the JSON error shape"
import json, sys
body = json.load(open(sys.argv[1], encoding="utf-8"))
assert isinstance(body, dict) and body.get("code") == 413 and isinstance(body.get("message"), str), body
PY
pass "oversize body ($(wc -c <"$work/big.json") bytes) -> 413 JSON"

# The server still answers after the rejected upload.
code="$(curl --silent --max-time 5 -o /dev/null -w '%{http_code}' "$URL/ping" || true)"
[ "$code" = 200 ] || fail "/ping answered ${code:-nothing} after the oversize request"
pass "GET /ping still 200"

# --- graceful stop ----------------------------------------------------------------------------
t_stop="$(now)"
podman stop --time "$STOP_TIMEOUT" "$cid" >/dev/null || fail "podman stop failed"
stop_s="$(elapsed "$t_stop")"
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$cid")" || fail "podman inspect $cid failed"
[ "$exit_code" = 0 ] || fail "container exited with code $exit_code after SIGTERM, expected 0"
awk -v s="$stop_s" -v limit="$STOP_TIMEOUT" 'BEGIN { exit !(s < limit) }' \
    || fail "podman stop took ${stop_s}s: the server ignored SIGTERM and was killed after ${STOP_TIMEOUT}s"
pass "podman stop -t $STOP_TIMEOUT: exit code 0 after ${stop_s}s"

log "timings: start to /ping 200 ${start_s}s, stop ${stop_s}s"
