#!/usr/bin/env bash
# A user's produce/consume flow with curl, as the Strimzi bridge docs show it.
# usage: curl_flow.sh http://HOST:PORT
set -euo pipefail
base=$1
v2=application/vnd.kafka.v2+json
json=application/vnd.kafka.json.v2+json
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$(curl -sS -X POST "$base/topics/curl-flow" -H "content-type: $json" \
  -d '{"records":[{"key":"sensor-1","value":{"temp":20}},{"key":"sensor-2","value":{"temp":22}}]}')
echo "produce: $out"
[[ $out == *'"offsets":[{"partition":0,"offset":0},{"partition":0,"offset":1}]'* ]] || fail "produce: $out"

out=$(curl -sS -X POST "$base/consumers/curl-group" -H "content-type: $v2" \
  -d '{"name":"c1","format":"json","auto.offset.reset":"earliest","enable.auto.commit":false}')
echo "create: $out"
[[ $out == *'"instance_id":"c1"'* && $out == *'/consumers/curl-group/instances/c1"'* ]] || fail "create: $out"

code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$base/consumers/curl-group/instances/c1/subscription" \
  -H "content-type: $v2" -d '{"topics":["curl-flow"]}')
[[ $code == 204 ]] || fail "subscribe: $code"

records=""
for _ in $(seq 1 30); do
  out=$(curl -sS "$base/consumers/curl-group/instances/c1/records?timeout=1000" -H "accept: $json")
  records="$records$out"
  [[ $records == *sensor-2* ]] && break
done
echo "records: $records"
[[ $records == *'"key":"sensor-1","value":{"temp":20}'* && $records == *'"key":"sensor-2","value":{"temp":22}'* ]] || fail "records: $records"

code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$base/consumers/curl-group/instances/c1/offsets" -H "content-type: $v2")
[[ $code == 204 ]] || fail "commit: $code"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$base/consumers/curl-group/instances/c1")
[[ $code == 204 ]] || fail "delete: $code"
out=$(curl -sS "$base/consumers/curl-group/instances/c1/records" -H "accept: $json")
[[ $out == *'"error_code":404'* ]] || fail "deleted consumer still answers: $out"
echo "curl flow ok"
