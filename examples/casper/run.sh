#!/usr/bin/env bash
# The Casper event store end to end on one machine: fake node → barnabas → three topics →
# audit log + UI store over HTTP; then disaster recovery (delete the UI store, rewind its
# group, rebuild) and a comparison of the two stores.
#   examples/casper/run.sh            (a real node: edit barnabas.toml's urls, skip the fake node)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
cargo build -q -p barnabas --bin barnabas --example casper_node --example casper_audit --example casper_ui
bin=target/debug
pids=()
stop() { # consumers first, then the gateway (it drains), then the node
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
}
trap stop EXIT

"$bin/examples/casper_node" 127.0.0.1:9999 examples/casper/data & pids+=($!)
RUST_LOG=warn "$bin/barnabas" --config examples/casper/barnabas.toml --data-dir "$work/kafka" & pids+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/ready >/dev/null && break; sleep 0.2; done

"$bin/examples/casper_audit" http://127.0.0.1:8080 "$work/audit.jsonl" & pids+=($!)
echo "== UI store, built from Kafka"
"$bin/examples/casper_ui" http://127.0.0.1:8080 "$work/ui.db" --dump > "$work/ui-before.txt"
echo "   $(grep -c . "$work/ui-before.txt") lines; audit log: $(wc -l < "$work/audit.jsonl") events"

echo "== disaster: the UI store is lost; rewind the group and rebuild it"
rm -f "$work/ui.db"*
"$bin/examples/casper_ui" http://127.0.0.1:8080 "$work/ui.db" --rebuild --dump > "$work/ui-after.txt"
if diff -q "$work/ui-before.txt" "$work/ui-after.txt" >/dev/null; then
  echo "   rebuilt store is identical ($work/ui.db)"
else
  echo "   rebuilt store DIFFERS:"; diff "$work/ui-before.txt" "$work/ui-after.txt" | head; exit 1
fi
