#!/usr/bin/env bash
# The fast-path benchmark (issue 9, item 9): the real release `enrichflow serve` (and, in
# distributed mode, `enrichflow worker` processes), driven by the out-of-process closed-loop
# generator `--bench load`. For each configuration and repeat it starts a fresh server and
# database and measures, in order:
#   floor   GET /healthz at BENCH_FLOOR_CLIENTS clients (the HTTP floor of the same server)
#   cN      the 5-node webhook workflow at N clients for each N in BENCH_CLIENTS
# reporting runs/s, p50/p99, server CPU µs per run (utime+stime over the measured window ÷
# runs; serve + workers in distributed mode), the generator's CPU, RSS (VmRSS/VmHWM) and a
# correctness check (200 answers == succeeded runs in the database, no open attempts, one
# succeeded attempt per node). Prints a markdown table of the medians over BENCH_REPEATS.
#
#   engine/benches/fastpath/run.sh [CONFIG...]
#
# CONFIG: disk (SQLite under /tmp), tmpfs (SQLite under /dev/shm), dist1, dist2, dist4
# (Postgres + RabbitMQ, serve without local workers + 1/2/4 `enrichflow worker` processes).
# Default: `disk tmpfs`, or `dist1 dist2 dist4` with BENCH_MODE=distributed. `profile` records
# a perf profile of the 16-client phase on disk instead (see docs/benchmarks.md).
#
# Environment (defaults): BENCH_REPEATS (3) BENCH_SECONDS (10) BENCH_WARMUP (2)
# BENCH_CLIENTS ("1 16 64") BENCH_FLOOR_CLIENTS (16) BENCH_DURABILITY (unset: the binary's
# default; passed as --durability when `serve --help` lists it) BENCH_WAIT_IDLE (600: seconds to
# wait for the 1-minute load average to drop below BENCH_IDLE_LOAD, 1.0) BENCH_SKIP_BUILD
# BENCH_RESULTS (a .jsonl file; default under /tmp) BENCH_BINARY (target/release/enrichflow: another
# build to compare, e.g. a copy of the previous commit's; BENCH_REVISION labels it)
# BENCH_LOAD (the load generator's executable; default: built and located by cargo, which
# rebuilds it, and so needs a compiling tree, whenever the sources changed) BENCH_DATABASE_URL
# (postgres://postgres@127.0.0.1:5432/postgres: a server where databases may be created)
# BENCH_AMQP_URL (amqp://guest:guest@127.0.0.1:5672/%2f) BENCH_PG_POOL (10: --database-pool-size
# of each distributed process; 5 processes × (10 + 5) stay under Postgres' 100 connections)
# BENCH_WORKER_CONCURRENCY (8) BENCH_PROFILE_OUT (/tmp/enrichflow-profile).
set -euo pipefail

root=$(cd "$(dirname "$0")/../../.." && pwd)
here="$root/engine/benches/fastpath"
cd "$root"

repeats=${BENCH_REPEATS:-3}
seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-2}
client_counts=${BENCH_CLIENTS:-1 16 64}
floor_clients=${BENCH_FLOOR_CLIENTS:-16}
admin_url=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
amqp_url=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
pg_pool=${BENCH_PG_POOL:-10}
worker_concurrency=${BENCH_WORKER_CONCURRENCY:-8}
binary=${BENCH_BINARY:-$root/target/release/enrichflow}
work=$(mktemp -d /tmp/enrichflow-fastpath.XXXXXX)
results=${BENCH_RESULTS:-$work/results.jsonl}
started_pids=()
database_name=""
queue_prefix=""

cleanup() {
    stop_processes
    drop_services
    rm -rf "$work/db" "/dev/shm/$(basename "$work")"
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

build() {
    [ -n "${BENCH_SKIP_BUILD:-}" ] && return
    log "building release (enrichflow + the load bench)…"
    cargo build --release -p enrichflow --bin enrichflow >&2
    cargo bench -p enrichflow --bench load --no-run >&2
}

# The load bench's executable, as cargo names it (target/release/deps/load-HASH).
load_binary() {
    cargo bench -p enrichflow --bench load --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load" and m.get("executable"):
        print(m["executable"])'
}

# Waits for the 1-minute load average to drop below BENCH_IDLE_LOAD; all the waits of one
# invocation share the BENCH_WAIT_IDLE budget, so a machine that stays busy is measured anyway.
wait_idle() {
    local threshold=${BENCH_IDLE_LOAD:-1.0} load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if python3 -c "import sys; sys.exit(0 if $load < $threshold else 1)"; then
            log "load average $load < $threshold: measuring"
            return
        fi
        if [ "$SECONDS" -ge "$idle_deadline" ]; then
            log "load average $load >= $threshold and the wait budget is spent: measuring on a busy machine"
            return
        fi
        sleep 15
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The durability mode passed to serve, or "default" when none is (unset, or not supported).
choose_durability() {
    durability=default
    [ -z "${BENCH_DURABILITY:-}" ] && return
    if "$binary" serve --help | grep -q -- '--durability'; then
        durability=$BENCH_DURABILITY
    else
        log "this binary has no --durability; BENCH_DURABILITY=$BENCH_DURABILITY ignored"
    fi
}

durability_args() {
    [ "$durability" = default ] || printf '%s\n' --durability "$durability"
}

# Starts serve (and workers) for a configuration; sets server_pid, worker_pids, port, db_check.
start_config() {
    local config=$1 workflows="$work/workflows" database_url extra=()
    mkdir -p "$workflows"
    cp "$root/engine/benches/fixtures/five-transforms.yaml" "$workflows/"
    port=$(free_port)
    worker_pids=()
    mapfile -t extra < <(durability_args)
    case $config in
    disk | tmpfs | profile)
        local dir="$work/db"
        [ "$config" = tmpfs ] && dir="/dev/shm/$(basename "$work")"
        rm -rf "$dir" && mkdir -p "$dir"
        sqlite_file="$dir/enrichflow.db"
        database_url="sqlite://$sqlite_file"
        RUST_LOG=warn "$binary" serve --workflows "$workflows" --database-url "$database_url" \
            --listen "127.0.0.1:$port" "${extra[@]}" >>"$work/serve.log" 2>&1 &
        server_pid=$!
        started_pids+=("$server_pid")
        ;;
    dist*)
        local workers=${config#dist} id
        id=$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
        database_name="enrichflow_bench_$id"
        queue_prefix="enrichflow_bench_$id"
        psql -q "$admin_url" -c "CREATE DATABASE $database_name" >&2
        database_url="${admin_url%/*}/$database_name"
        pg_url=$database_url
        RUST_LOG=warn "$binary" serve --workflows "$workflows" --database-url "$database_url" \
            --amqp-url "$amqp_url" --queue-prefix "$queue_prefix" \
            --database-pool-size "$pg_pool" --listen "127.0.0.1:$port" "${extra[@]}" \
            >>"$work/serve.log" 2>&1 &
        server_pid=$!
        started_pids+=("$server_pid")
        wait_healthy
        for _ in $(seq "$workers"); do
            RUST_LOG=warn "$binary" worker --database-url "$database_url" \
                --amqp-url "$amqp_url" --queue-prefix "$queue_prefix" \
                --database-pool-size "$pg_pool" --concurrency "$worker_concurrency" \
                >>"$work/worker.log" 2>&1 &
            worker_pids+=($!)
            started_pids+=($!)
        done
        ;;
    *)
        log "unknown configuration $config"
        exit 2
        ;;
    esac
    wait_healthy
}

wait_healthy() {
    for _ in $(seq 300); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return
        kill -0 "$server_pid" 2>/dev/null || { log "serve exited; see $work/serve.log"; exit 1; }
        sleep 0.1
    done
    log "serve did not become healthy; see $work/serve.log"
    exit 1
}

stop_processes() {
    local pid
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    started_pids=()
}

drop_services() {
    if [ -n "$database_name" ]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database_name WITH (FORCE)" >&2 || true
        database_name=""
    fi
    if [ -n "$queue_prefix" ]; then
        rabbitmqctl -q delete_queue "$queue_prefix.attempts" >/dev/null 2>&1 || true
        rabbitmqctl -q delete_queue "$queue_prefix.attempts.dead" >/dev/null 2>&1 || true
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$queue_prefix.attempts.dead\">>), false, <<\"bench\">>)." >/dev/null 2>&1 || true
        queue_prefix=""
    fi
}

# One SQL query's single value, on whichever store the configuration uses.
sql() {
    if [ -n "$database_name" ]; then
        psql -At "$pg_url" -c "$1" 2>/dev/null || echo "?"
    else
        sqlite3 -cmd ".timeout 5000" "$sqlite_file" "$1" 2>/dev/null || echo "?"
    fi
}

# Prints a JSON object: the database's figures after a phase, compared with the 200 answers.
check_store() {
    local answered=$1 succeeded open_runs open_attempts doubled
    succeeded=$(sql "SELECT count(*) FROM runs WHERE status = 'succeeded'")
    open_runs=$(sql "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
    open_attempts=$(sql "SELECT count(*) FROM node_attempts WHERE status IN ('pending', 'queued', 'running')")
    doubled=$(sql "SELECT count(*) FROM (SELECT run_id, node_id FROM node_attempts WHERE status = 'succeeded' GROUP BY run_id, node_id HAVING count(*) > 1) AS d")
    python3 - "$answered" "$succeeded" "$open_runs" "$open_attempts" "$doubled" <<'PY'
import json, sys
answered, succeeded, open_runs, open_attempts, doubled = sys.argv[1:]
number = lambda text: int(text) if text.isdigit() else None
ok = (number(succeeded) == int(answered) and number(open_runs) == 0
      and number(open_attempts) == 0 and number(doubled) == 0)
print(json.dumps({"answered_200": int(answered), "succeeded_runs": number(succeeded),
                  "open_runs": number(open_runs), "open_attempts": number(open_attempts),
                  "doubled_nodes": number(doubled), "ok": ok}))
PY
}

memory() { awk -v key="$1:" '$1 == key {print int($2 / 1024)}' "/proc/$server_pid/status"; }

# Runs one phase and appends its JSON line (generator report + RSS + check) to the results.
phase() {
    local config=$1 repeat=$2 name=$3 clients=$4 path=$5 body=${6:-} args=() report check
    args=(--url "http://127.0.0.1:$port$path" --clients "$clients" --seconds "$seconds"
        --warmup "$warmup" --json --label "$config/$name" --proc "serve=$server_pid")
    [ -n "$body" ] && args+=(--body "$body")
    if [ "${#worker_pids[@]}" -gt 0 ]; then
        args+=(--proc "workers=$(IFS=,; echo "${worker_pids[*]}")")
        # Postgres: the backends serving the bench database only (the server is shared with
        # other users); RabbitMQ: the whole broker, so other users' traffic counts there.
        args+=(--proc "postgres=comm:postgres&cmdline:$database_name" --proc "rabbitmq=comm:beam.smp")
    fi
    report=$("$load" "${args[@]}")
    if [ -n "$body" ]; then
        answered=$((answered + $(jq_field "$report" status_200_total)))
        check=$(check_store "$answered")
    else
        check=null
    fi
    python3 - "$report" "$check" "$config" "$repeat" "$name" "$(memory VmRSS)" "$(memory VmHWM)" \
        "$durability" "$revision" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results" <<'PY'
import json, sys
report, check, config, repeat, name, rss, hwm, durability, revision, load = sys.argv[1:]
line = json.loads(report)
line.update(config=config, repeat=int(repeat), phase=name, rss_mib=int(rss), hwm_mib=int(hwm),
            durability=durability, check=json.loads(check), revision=revision, loadavg=load)
print(json.dumps(line))
PY
    log "$(tail -n1 "$results" | python3 "$here/summary.py" --line)"
}

jq_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

measure() {
    local config=$1 repeat=$2 clients
    start_config "$config"
    answered=0
    phase "$config" "$repeat" floor "$floor_clients" /healthz
    for clients in $client_counts; do
        phase "$config" "$repeat" "c$clients" "$clients" /hooks/bench '{"n":{n}}'
    done
    stop_processes
    drop_services
}

# perf profile of the 16-client embedded phase (the binary carries line tables).
profile() {
    local out=${BENCH_PROFILE_OUT:-/tmp/enrichflow-profile} generator
    mkdir -p "$out"
    start_config profile
    "$load" --url "http://127.0.0.1:$port/hooks/bench" --clients 16 --seconds 12 --warmup 2 \
        --body '{"n":{n}}' --proc "serve=$server_pid" >"$out/load.txt" &
    generator=$!
    sleep 3
    perf record -F 499 -g --call-graph dwarf,16384 -o "$out/perf.data" -p "$server_pid" -- sleep 8 \
        2>"$out/perf-record.log"
    wait "$generator"
    stop_processes
    # Flat (no call chains): the folded stacks carry those.
    perf report -i "$out/perf.data" --no-children --stdio -g none --percent-limit 0.3 \
        >"$out/report.txt" 2>/dev/null
    perf script -i "$out/perf.data" 2>/dev/null | python3 "$here/fold.py" >"$out/folded.txt"
    python3 "$here/fold.py" --summary <"$out/folded.txt" >"$out/summary.txt"
    if command -v inferno-flamegraph >/dev/null; then
        inferno-flamegraph --title "enrichflow serve, 16 clients, $revision" <"$out/folded.txt" \
            >"$out/flame.svg"
    fi
    log "profile written to $out (load.txt, report.txt, folded.txt, summary.txt, flame.svg if inferno is installed, perf.data)"
}

main() {
    local configs=("$@")
    if [ "${#configs[@]}" -eq 0 ]; then
        if [ "${BENCH_MODE:-embedded}" = distributed ]; then
            configs=(dist1 dist2 dist4)
        else
            configs=(disk tmpfs)
        fi
    fi
    build
    choose_durability
    # The last commit that changed what is measured (benches and docs do not), + if edited since.
    revision=${BENCH_REVISION:-$(git log -1 --format=%h -- engine/src migrations Cargo.lock)$(git diff --quiet HEAD -- engine/src migrations Cargo.lock || echo +dirty)}
    load=${BENCH_LOAD:-$(load_binary)}
    [ -x "$load" ] || { log "cannot find the load bench executable"; exit 1; }
    if [ "${configs[0]}" = profile ]; then
        profile
        return
    fi
    log "results: $results"
    idle_deadline=$((SECONDS + ${BENCH_WAIT_IDLE:-600}))
    for repeat in $(seq "$repeats"); do
        for config in "${configs[@]}"; do
            wait_idle
            log "== $config, repeat $repeat ($revision, load $(cut -d' ' -f1-3 /proc/loadavg))"
            measure "$config" "$repeat"
        done
    done
    python3 "$here/summary.py" "$results"
}

main "$@"
