#!/usr/bin/env bash
# scripts/container-check.sh: builds the container image (Dockerfile) and proves it for real
# against the Postgres on this host: the binary's size and the symbols a backtrace is named
# from, then `migrate`, `credentials new-key`, `accounts add`, `enqueue` and `followq run` from
# the image with `followq sim` in a second container of the same image; 200 jobs all finished
# with no 429 from the simulator, the daemon running as the image's non-root user, and `podman stop`
# (SIGTERM, with requests in flight) ending it within worker.shutdown_grace with its leases
# released and every request it sent recorded. Prints the image size and the build time.
#
#   bash ../shared/containers/setup.sh        # once: Podman and the base images, as root
#   bash scripts/container-check.sh           # from the project root, as root
#
# DATABASE_URL names the host's Postgres (default postgres://postgres@127.0.0.1:5432/postgres);
# the script creates a scratch database there and drops it at the end. IMAGE (default
# followq:check) is the tag it builds; ENGINE (default podman) may be docker.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
IMAGE=${IMAGE:-followq:check}
HOST_DB=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
JOBS=200
USERS=10
# The simulator's window and followq's quota alike: 20 jobs per user need two windows or more,
# so the daemon must pace each account to avoid 429s.
WINDOW_REQUESTS=10
WINDOW=5s
GRACE_SECONDS=10
MAX_BINARY_BYTES=30000000

started=$(date +%s)
say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

command -v "$ENGINE" >/dev/null || fail "$ENGINE is missing: run bash ../shared/containers/setup.sh"
for tool in psql curl readelf python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
pg_isready -q -d "$HOST_DB" || fail "no Postgres answers at DATABASE_URL (start it first)"

# --- The image ---------------------------------------------------------------------------
build_args=()
if command -v rustc >/dev/null; then
  # The local rust base image is named after this machine's toolchain (setup.sh).
  version=$(rustc --version | awk '{print $2}')
  build_args+=(--build-arg "RUST_VERSION=${version%.*}")
fi
say "building $IMAGE"
build_started=$(date +%s)
"$ENGINE" build "${build_args[@]}" -t "$IMAGE" . >/tmp/followq-container-build.log 2>&1 ||
  { tail -40 /tmp/followq-container-build.log; fail "the image did not build (log: /tmp/followq-container-build.log)"; }
build_seconds=$(( $(date +%s) - build_started ))
image_bytes=$("$ENGINE" image inspect "$IMAGE" --format '{{.Size}}')

work=$(mktemp -d)
prefix="followq-check-$$"
scratch="followq_container_check_$$_$(date +%s)"
cleanup() {
  "$ENGINE" rm -f -t 0 "$prefix-run" "$prefix-sim" >/dev/null 2>&1 || true
  psql "$HOST_DB" -qc "DROP DATABASE IF EXISTS \"$scratch\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- The binary: size, symbols kept, debug info gone, and a backtrace that names functions --
holder=$("$ENGINE" create "$IMAGE")
"$ENGINE" cp "$holder:/usr/local/bin/followq" "$work/followq" >/dev/null
"$ENGINE" rm "$holder" >/dev/null
binary_bytes=$(stat -c %s "$work/followq")
sections=$(readelf -S -W "$work/followq")
grep -q ' \.symtab ' <<<"$sections" || fail "the binary has no symbol table"
if grep -q ' \.debug_' <<<"$sections"; then fail "the binary still carries debug info"; fi
(( binary_bytes <= MAX_BINARY_BYTES )) || fail "the binary is $binary_bytes bytes, over $MAX_BINARY_BYTES"
# The symbols a panic's backtrace is named from (RUST_BACKTRACE=1): followq's own functions,
# demangled. (A real panic used to be provoked by printing into a closed pipe; the CLI now
# ends quietly there, and no input of the shipped binary panics.)
functions=$(nm -C "$work/followq" | grep -E ' [tT] followq::' || true)
[ -n "$functions" ] || fail "the binary's symbols name no followq function"
say "binary $binary_bytes bytes, symbols kept, no debug info; a backtrace can name functions such as:"
head -3 <<<"$functions"

# --- The database and the key ------------------------------------------------------------
psql "$HOST_DB" -qc "CREATE DATABASE \"$scratch\"" >/dev/null
base_url=${HOST_DB%%\?*}
export DATABASE_URL="${base_url%/*}/$scratch${HOST_DB#"$base_url"}"
FOLLOWQ_CREDENTIALS__KEYS__CHECK=$("$ENGINE" run --rm "$IMAGE" credentials new-key 2>/dev/null)
export FOLLOWQ_CREDENTIALS__KEYS__CHECK FOLLOWQ_CREDENTIALS__ACTIVE_KEY=check
# Values come from this script's environment (-e NAME): no secret on a command line.
db=(--network host -e DATABASE_URL)
keys=(-e FOLLOWQ_CREDENTIALS__KEYS__CHECK -e FOLLOWQ_CREDENTIALS__ACTIVE_KEY)
sql() { psql "$DATABASE_URL" -Atqc "$1"; }

"$ENGINE" run --rm "${db[@]}" "$IMAGE" migrate

# --- The simulator, in a second container of the same image ------------------------------
users=()
for i in $(seq 1 "$USERS"); do users+=(--user "$((1000 + i))"); done
"$ENGINE" run -d --name "$prefix-sim" --network host "$IMAGE" sim --listen 127.0.0.1:0 \
  --window-requests "$WINDOW_REQUESTS" --window "$WINDOW" --client-id followq-check \
  --delay 0.2 --delay-ms 1500 "${users[@]}" >/dev/null
# Stdout: {"base_url": ...}, then one line of tokens per user (stdout only, never the log).
for _ in $(seq 1 100); do
  lines=$("$ENGINE" logs "$prefix-sim" 2>/dev/null | grep -c '"access_token"' || true)
  (( lines == USERS )) && break
  sleep 0.1
done
(( lines == USERS )) || fail "the simulator did not print its users' tokens"
sim_url=$("$ENGINE" logs "$prefix-sim" 2>/dev/null | sed -n 's/^{"base_url":"\([^"]*\)"}$/\1/p')
[ -n "$sim_url" ] || fail "the simulator did not print its base URL"
say "simulator in $prefix-sim at $sim_url: $USERS users, $WINDOW_REQUESTS requests per $WINDOW"

# Each user's line is the token endpoint's answer as `accounts add --stdin` reads it.
"$ENGINE" logs "$prefix-sim" 2>/dev/null | grep '"access_token"' | while read -r line; do
  user=$(sed -n 's/.*"user_id":"\([0-9]*\)".*/\1/p' <<<"$line")
  "$ENGINE" run --rm -i "${db[@]}" "${keys[@]}" "$IMAGE" accounts add --user-id "$user" --stdin \
    <<<"$line" >/dev/null
done
[ "$(sql "SELECT count(*) FROM followq.accounts")" = "$USERS" ] || fail "accounts add"

enqueue() { # $1: first target id; JOBS jobs spread over the users
  for n in $(seq 0 $((JOBS - 1))); do
    echo "$((1001 + n % USERS)),$(( $1 + n / USERS ))"
  done | "$ENGINE" run --rm -i "${db[@]}" "$IMAGE" enqueue --file - >/dev/null
}
enqueue 5000000000
[ "$(sql "SELECT count(*) FROM followq.follow_jobs")" = "$JOBS" ] || fail "enqueue"

# --- The daemon ---------------------------------------------------------------------------
http_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_started=$(date +%s)
"$ENGINE" run -d --name "$prefix-run" "${db[@]}" "${keys[@]}" \
  -e FOLLOWQ_X_API__BASE_URL="$sim_url" -e FOLLOWQ_X_API__OAUTH2__CLIENT_ID=followq-check \
  -e FOLLOWQ_RATE_LIMIT__REQUESTS_PER_PERIOD="$WINDOW_REQUESTS" -e FOLLOWQ_RATE_LIMIT__PERIOD="$WINDOW" \
  -e FOLLOWQ_WORKER__SHUTDOWN_GRACE="${GRACE_SECONDS}s" -e FOLLOWQ_LOG__FORMAT=json \
  -e FOLLOWQ_HTTP__ENABLED=true -e FOLLOWQ_HTTP__LISTEN="127.0.0.1:$http_port" \
  "$IMAGE" >/dev/null
finished=0
for _ in $(seq 1 240); do
  finished=$(sql "SELECT count(*) FROM followq.follow_jobs WHERE state IN ('succeeded', 'failed', 'cancelled')")
  [ "$finished" = "$JOBS" ] && break
  sleep 0.5
done
run_seconds=$(( $(date +%s) - run_started ))
[ "$finished" = "$JOBS" ] || { "$ENGINE" logs --tail 20 "$prefix-run"; fail "$finished of $JOBS jobs finished in ${run_seconds}s"; }
succeeded=$(sql "SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
stats=$(curl -fsS "$sim_url/__sim/stats")
sim_429=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["all_users"]["rate_limited"])' <<<"$stats")
metrics=$(curl -fsS "http://127.0.0.1:$http_port/metrics")
daemon_429=$(awk '$1 == "followq_rate_limited_total" {print $2}' <<<"$metrics")
[ "$succeeded" = "$JOBS" ] || fail "$succeeded of $JOBS jobs succeeded"
[ "$sim_429" = "0" ] && [ "$daemon_429" = "0" ] || fail "429 answers: $sim_429 (simulator), $daemon_429 (followq)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz")" = 200 ] || fail "/readyz"
say "$succeeded of $JOBS jobs succeeded in ${run_seconds}s, 0 answers 429 (simulator and /metrics)"

pid=$("$ENGINE" inspect --format '{{.State.Pid}}' "$prefix-run")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 10001 ] || fail "the daemon runs as uid $uid, not the image's user 10001"
say "the daemon runs as uid $uid (the image's followq user)"

# --- SIGTERM with requests in flight --------------------------------------------------------
enqueue 6000000000
for _ in $(seq 1 100); do
  in_flight=$(sql "SELECT count(*) FROM followq.attempts WHERE outcome IS NULL")
  (( in_flight > 0 )) && break
  sleep 0.1
done
stop_started=$(date +%s.%N)
"$ENGINE" stop -t $((GRACE_SECONDS + 30)) "$prefix-run" >/dev/null
stop_seconds=$(python3 -c "import time; print(f'{time.time() - $stop_started:.1f}')")
exit_code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$prefix-run")
held=$(sql "SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL")
daemons=$(sql "SELECT count(*) FROM followq.daemons")
unrecorded=$(sql "SELECT count(*) FROM followq.attempts WHERE outcome IS NULL")
[ "$exit_code" = 0 ] || { "$ENGINE" logs --tail 20 "$prefix-run"; fail "the daemon exited with $exit_code after SIGTERM"; }
python3 -c "import sys; sys.exit(0 if $stop_seconds < $GRACE_SECONDS else 1)" ||
  fail "podman stop took ${stop_seconds}s, longer than worker.shutdown_grace (${GRACE_SECONDS}s)"
[ "$held" = 0 ] && [ "$daemons" = 0 ] || fail "after the stop: $held accounts still leased, $daemons daemons registered"
[ "$unrecorded" = 0 ] || fail "$unrecorded requests sent without their outcome recorded"
say "SIGTERM with $in_flight requests in flight: exit 0 in ${stop_seconds}s (grace ${GRACE_SECONDS}s), 0 leases held, every request recorded"

total_seconds=$(( $(date +%s) - started ))
say "image $IMAGE: $(( image_bytes / 1000000 )) MB ($image_bytes bytes); binary $(( binary_bytes / 1000000 )) MB; built in ${build_seconds}s; check took ${total_seconds}s"
echo "container check passed"
