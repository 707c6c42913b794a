#!/usr/bin/env bash
# Resident memory of one `enrichflow serve` under large webhook bodies (issue 8): at rest,
# after one 1 MB body, after 32 at once, after listing every run (`limit=500`, 8 lists at
# once), and after 60 s idle. Prints one line per step: RSS now and the peak so far (MiB).
#
#   engine/benches/rss/measure.sh [BINARY] [extra environment, e.g. LD_PRELOAD=…]
#
# Build the binary first (`cargo build --release -p enrichflow`); run on an idle machine.
set -euo pipefail

binary=${1:-target/release/enrichflow}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/workflows"
cp "$here/big.yaml" "$work/workflows/"

# 1 MiB of small objects, the worst case for a parsed JSON tree.
python3 - "$work/body.json" <<'PY'
import json, sys
items, size = [], 0
while size < 1024 * 1024:
    item = {"id": len(items), "email": f"person{len(items)}@example.com", "tags": ["a", "b"], "score": 1.5}
    items.append(item)
    size += len(json.dumps(item)) + 2
json.dump({"name": "load", "items": items}, open(sys.argv[1], "w"))
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env "$@" RUST_LOG=warn "$binary" serve --workflows "$work/workflows" \
    --database-url "sqlite://$work/enrichflow.db" --listen "127.0.0.1:$port" \
    --body-limit 4194304 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done

rss() {
    local now peak
    now=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status")
    peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status")
    printf '%-34s rss %5d MiB   peak %5d MiB\n' "$1" "$now" "$peak"
}
post() {
    curl -fs -o /dev/null -H 'content-type: application/json' \
        --data-binary "@$work/body.json" "http://127.0.0.1:$port/hooks/big"
}

rss "baseline"
post
rss "after 1 body of 1 MiB"
clients=()
for _ in $(seq 32); do post & clients+=($!); done
wait "${clients[@]}"
rss "after 32 bodies at once"
clients=()
for _ in $(seq 8); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/api/v1/runs?limit=500" & clients+=($!)
done
wait "${clients[@]}"
rss "after 8 lists of 33 runs at once"
sleep 60
rss "after 60 s idle"
