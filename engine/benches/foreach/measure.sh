#!/usr/bin/env bash
# Time and peak memory of one `foreach` over N leads through a `transform` (issue 9, item 8).
# Posts one list import of N leads to `serve`, polls the run until it finishes (printing the
# node's progress as the run JSON shows it) and prints the wall time and the server's RSS peak.
#
#   engine/benches/foreach/measure.sh N [BINARY]
#
# Build the binary first (`cargo build --release -p enrichflow`); run on an idle machine.
set -euo pipefail

count=${1:?usage: measure.sh N [BINARY]}
binary=${2:-target/release/enrichflow}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/workflows"
cp "$here/lead-list.yaml" "$work/workflows/"

python3 - "$work/body.json" "$count" <<'PY'
import json, sys
n = int(sys.argv[2])
leads = ({"id": i, "email": f"Person{i}@Example.com"} for i in range(n))
with open(sys.argv[1], "w") as out:
    out.write('{"leads": [')
    for i, lead in enumerate(leads):
        out.write(("," if i else "") + json.dumps(lead))
    out.write("]}")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The list import is larger than the default request and template limits allow.
RUST_LOG=warn "$binary" serve --workflows "$work/workflows" \
    --database-url "sqlite://$work/enrichflow.db" --listen "127.0.0.1:$port" \
    --body-limit 1000000000 --json-max-values 100000000 \
    --template-max-output 1000000000 --template-render-timeout 1h >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done

peak() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status"; }
base=$(peak)
start=$(date +%s.%N)
run=$(curl -fs -H 'content-type: application/json' --data-binary "@$work/body.json" \
    "http://127.0.0.1:$port/hooks/lead-list" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
while :; do
    status=$(curl -fs "http://127.0.0.1:$port/api/v1/runs/$run" -o "$work/run.json" -w '%{http_code}' || true)
    state=$(python3 - "$work/run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
each = run["nodes"]["each"]
print(run["status"], each["status"], json.dumps(each.get("progress")))
PY
)
    echo "$(printf '%6.1f' "$(echo "$(date +%s.%N) - $start" | bc)") s  $state"
    case $state in succeeded*|failed*|cancelled*) break ;; esac
    sleep 1
done
end=$(date +%s.%N)
printf 'items %d  wall %.1f s  peak rss %d MiB (at start %d MiB)\n' "$count" "$(echo "$end - $start" | bc)" "$(peak)" "$base"
grep -v '^$' "$work/server.log" | tail -5 || true
