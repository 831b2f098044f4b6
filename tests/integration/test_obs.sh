#!/usr/bin/env bash
# Integration: logs and metrics of a serving kmsd (docs/observability.md). Proves, against a
# real node behind a webhook authorization backend (python3, loopback): with --log-format json
# every stderr line is one JSON object; a request's lines carry its request id, which is also
# the X-Request-Id response header (the client's when it sends a valid one, else generated);
# a key release, a policy denial, a backend failure and an unattested call are each logged at
# info (warn for the backend) with method, app id, instance id, class and reason, and the
# released keys appear in no log line; /metrics counts the backend failure apart from the
# policy denial and passes `promtool check metrics` (skipped only when promtool is absent and
# CI is unset); --log-format text carries req=<id>; a bad --log-format is refused.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
CTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-obs-test-XXXXXX)
P=$((10000 + RANDOM % 20000))
PID=
HOOK=
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }
cleanup() {
    for p in $PID $HOOK; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
command -v python3 >/dev/null || fail "python3 is required"

APP_OK=1111111111111111111111111111111111111111
APP_DENY=bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0
APP_DOWN=dead00000000000000000000000000000000dead
INSTANCE=2222222222222222222222222222222222222222

# ---- the authorization backend: allows KMS boots and APP_OK, denies APP_DENY, fails (HTTP 500)
# for APP_DOWN. Binds an ephemeral port and writes it to hook.port once listening.
cat >"$WORK/hook.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def reply(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        self.reply(200, {"status": "ok", "kmsContractAddr": "0x00", "gatewayAppId": "gw",
                         "chainId": 1, "appImplementation": "0x00"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        app = body.get("appId", "").lower().removeprefix("0x")
        if self.path.endswith("bootAuth/kms") or app.startswith("1111"):
            self.reply(200, {"isAllowed": True, "gatewayAppId": "gw", "reason": ""})
        elif app.startswith("bad0"):
            self.reply(200, {"isAllowed": False, "gatewayAppId": "", "reason": "App not registered"})
        else:
            self.reply(500, {"error": "backend down"})

    def log_message(self, *a):
        pass

s = HTTPServer(("127.0.0.1", 0), H)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.serve_forever()
EOF
python3 "$WORK/hook.py" "$WORK/hook.port" >"$WORK/hook.log" 2>&1 &
HOOK=$!
end=$((SECONDS + 60))
until [ -s "$WORK/hook.port" ]; do
    [ $SECONDS -lt $end ] || fail "webhook did not start"
    kill -0 "$HOOK" 2>/dev/null || fail "webhook exited"
    sleep 0.1
done
HP=$(cat "$WORK/hook.port")

# ---- refused at start
if timeout 20 "$KMSD" --data-dir "$WORK/x" --log-format xml >"$WORK/refused.log" 2>&1; then
    fail "kmsd started with --log-format xml"
fi
grep -q -- "--log-format must be text or json" "$WORK/refused.log" || fail "bad --log-format message"

start() { # log-format
    "$KMSD" --data-dir "$WORK/node" --tee sim --insecure-sim --name obs1 \
        --auth webhook --auth-url "http://127.0.0.1:$HP/" --auto-bootstrap-domain localhost \
        --listen "127.0.0.1:$P" --log-format "$1" 2>>"$WORK/node-$1.log" &
    PID=$!
    local end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    until curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$P/health"; do
        [ $SECONDS -lt $end ] || fail "kmsd did not come up"
        kill -0 "$PID" 2>/dev/null || fail "kmsd exited at start"
        sleep 0.1
    done
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
get_keys() { # app-id out
    "$CTL" get-keys --kms "https://localhost:$P" --app-id "$1" --instance-id "$INSTANCE" \
        --timeout-ms 60000 --tee sim \
        --insecure-sim --sim-dir "$WORK/node/sim" --out "$2"
}
metric() { curl -sk --max-time 30 "https://127.0.0.1:$P/metrics"; }

start json
# a release, a denial, a backend failure
get_keys $APP_OK "$WORK/keys.json" >"$WORK/ctl.log" 2>&1 || fail "get-keys of an allowed app"
if get_keys $APP_DENY "$WORK/deny.json" >"$WORK/ctl-deny.log" 2>&1; then fail "denied app got keys"; fi
grep -q "App not registered" "$WORK/ctl-deny.log" || fail "deny: $(cat "$WORK/ctl-deny.log")"
if get_keys $APP_DOWN "$WORK/down.json" >"$WORK/ctl-down.log" 2>&1; then fail "backend down: got keys"; fi
grep -q "authorization backend unavailable" "$WORK/ctl-down.log" || fail "down: $(cat "$WORK/ctl-down.log")"
# an unattested GetAppKey with the client's request id; one without (generated id)
hdr=$(curl -sk -D - -o "$WORK/unatt.json" -H 'X-Request-Id: obs-test.1' -H 'Content-Type: application/json' \
    -d '{}' "https://127.0.0.1:$P/prpc/GetAppKey?json")
echo "$hdr" | grep -qi '^X-Request-Id: obs-test.1' || fail "X-Request-Id not echoed: $hdr"
grep -q "No attestation provided" "$WORK/unatt.json" || fail "unattested: $(cat "$WORK/unatt.json")"
# a malformed GetAppKey: refused as input (each refusal counts once, in its log line's class)
curl -sk -o "$WORK/bad.json" -H 'Content-Type: application/json' -d '{"api_version": "x"}' \
    "https://127.0.0.1:$P/prpc/GetAppKey?json"
grep -q "api_version must be a number" "$WORK/bad.json" || fail "malformed: $(cat "$WORK/bad.json")"
hdr=$(curl -sk -D - -o /dev/null -H 'X-Request-Id: bad id!' "https://127.0.0.1:$P/prpc/GetMeta?json")
GEN=$(echo "$hdr" | tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
echo "$GEN" | grep -Eq '^[0-9a-f]{8}-[0-9a-f]{6,}$' || fail "generated request id: '$GEN' in $hdr"

m=$(metric)
echo "$m" >"$WORK/metrics.txt"
for want in 'kmsd_keys_released_total 1' 'kmsd_refusals_total{reason="policy"} 1' \
    'kmsd_refusals_total{reason="backend"} 1' 'kmsd_refusals_total{reason="attestation"} 1' \
    'kmsd_refusals_total{reason="input"} 1' 'kmsd_refusals_total{reason="internal"} 0' \
    'kmsd_build_info{version="' \
    'kmsd_attested_rpc_seconds_bucket{le="10"} ' 'process_open_fds ' 'process_resident_memory_bytes '; do
    grep -qF "$want" "$WORK/metrics.txt" || fail "metrics lack '$want': $(grep -E 'refusals|released' "$WORK/metrics.txt")"
done
if command -v promtool >/dev/null; then
    promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.log" 2>&1 ||
        fail "promtool check metrics: $(cat "$WORK/promtool.log")"
    # the check itself is live: a family without HELP is reported
    printf '# TYPE x_total counter\nx_total 1\n' | promtool check metrics >/dev/null 2>&1 &&
        fail "promtool accepted a family without HELP"
elif [ -n "${CI:-}" ]; then
    fail "promtool is not installed (CI is set; deploy/install-deps.sh installs prometheus)"
else
    echo "SKIP promtool check: promtool not installed"
fi
stop

# ---- the JSON log: every line parses; the decisions are there with their fields
python3 - "$WORK/node-json.log" "$WORK/keys.json" "$APP_OK" "$APP_DENY" "$APP_DOWN" "$GEN" <<'EOF' || fail "JSON log check"
import json, sys
log, keys, ok, deny, down, gen = sys.argv[1:]
lines = [json.loads(l) for l in open(log, encoding="utf-8")]  # every line: one JSON object
assert lines and all(isinstance(o, dict) for o in lines), "not all objects"
for o in lines:
    for k in ("ts", "level", "msg", "node"):
        assert isinstance(o.get(k), str), (k, o)
    assert o["node"] == "obs1", o
    assert o["level"] in ("debug", "info", "warn", "error"), o

def one(pred, what):
    m = [o for o in lines if pred(o)]
    assert len(m) == 1, (what, m)
    return m[0]

rel = one(lambda o: o.get("event") == "released" and o.get("method") == "GetAppKey", "release")
assert rel["app_id"] == ok and rel["instance_id"] == "22" * 20 and rel["level"] == "info", rel
assert rel.get("request_id"), rel
den = one(lambda o: o.get("event") == "refused" and o.get("app_id") == deny, "denial")
assert den["class"] == "policy" and "App not registered" in den["reason"], den
assert den["instance_id"] == "22" * 20, den
assert den["level"] == "info" and den["method"] == "GetAppKey" and den.get("request_id"), den
bk = one(lambda o: o.get("event") == "refused" and o.get("app_id") == down, "backend")
assert bk["class"] == "backend" and "authorization backend unavailable" in bk["reason"], bk
assert bk["level"] == "warn", bk
un = one(lambda o: o.get("request_id") == "obs-test.1", "client request id")
assert un["event"] == "refused" and un["class"] == "attestation", un
assert "No attestation provided" in un["reason"], un
# three different requests
assert len({rel["request_id"], den["request_id"], bk["request_id"]}) == 3
# lines outside requests carry no request id
assert not any("request_id" in o for o in lines if o["msg"].startswith("state: ")), "state line"
# no key material in the log
k = json.load(open(keys))
raw = open(log, encoding="utf-8").read().lower()
for name in ("disk_crypt_key", "env_crypt_key", "k256_key"):
    v = k[name].lower().removeprefix("0x")
    assert len(v) >= 64 and v not in raw, name
print("json log ok:", len(lines), "lines")
EOF

# ---- text format: the request id as req=<id>
start text
curl -sk -o /dev/null -H 'X-Request-Id: obs-text-2' -H 'Content-Type: application/json' -d '{}' \
    "https://127.0.0.1:$P/prpc/GetAppKey?json"
stop
grep -q ' INFO  obs1 req=obs-text-2 GetAppKey: refused .*class=attestation' "$WORK/node-text.log" ||
    fail "text log: $(grep -i refused "$WORK/node-text.log")"
echo "PASS"
