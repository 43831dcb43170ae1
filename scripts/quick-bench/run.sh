#!/usr/bin/env bash
# Quick, local HTTP, MQTT and AMQP produce rates beside a direct producer, one embedded broker, same run.
# Not a benchmark suite (that is `barnabas bench`); needs wrk and ./scripts/test's venv.
#   scripts/quick-bench/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-15}
bin=target/release/barnabas
cargo build --release -p barnabas --bin barnabas -p barnabas-bench
http=127.0.0.1:18080; kafka=127.0.0.1:19092; mqtt=127.0.0.1:11883; amqp=127.0.0.1:15672
RUST_LOG=warn "$bin" --embedded-kafka=$kafka --http-listen $http --mqtt-listen $mqtt --amqp-listen $amqp 2>/tmp/quick-bench.log &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -sf "http://$http/ready" >/dev/null && break; sleep 0.1; done
.venv/bin/python scripts/quick-bench/direct.py $kafka direct 200000
curl -s -X POST "http://$http/topics/bench1" -H 'content-type: application/vnd.kafka.json.v2+json' -d '{"records":[{"value":"warm"}]}' >/dev/null
curl -s -X POST "http://$http/topics/bench100" -H 'content-type: application/vnd.kafka.json.v2+json' -d '{"records":[{"value":"warm"}]}' >/dev/null
for c in 1 16 64; do
  echo -n "http 1 record,   $c connections: "
  RECORDS=1 wrk -t$(( c < 2 ? 1 : 2 )) -c$c -d${secs}s -s scripts/quick-bench/produce.lua "http://$http/topics/bench1" | tail -1
done
for c in 1 16; do
  echo -n "http 100 records, $c connections: "
  RECORDS=100 wrk -t$(( c < 2 ? 1 : 2 )) -c$c -d${secs}s -s scripts/quick-bench/produce.lua "http://$http/topics/bench100" | tail -1
done
echo "gateway RSS: $(awk '/VmRSS/{print $2" "$3}' /proc/$pid/status)"
# MQTT, AMQP and HTTP through barnabas-bench (its own gateway and broker, same run as its direct baseline).
target/release/barnabas-bench --count 100000 direct mqtt-qos0 mqtt-qos1 mqtt-qos2 http-100 amqp
