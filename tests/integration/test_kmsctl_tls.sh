#!/usr/bin/env bash
# Integration: kmsctl verifies the node's TLS certificate against the cluster's root CA (issue 10
# item 8) and is plain about mistakes (issue 13 item 4). Two sim clusters A and B, a fake KMS
# with a self-signed certificate that replays A's answers, and a node without keys U:
#  - --ca / $KMSCTL_CA of A: meta, cluster status, cluster verify and get-keys succeed on A and
#    are refused on B and on the fake ("does not chain to the pinned CA"); without a CA they say
#    NOT verified (stderr, "server_verified": false), and the fake shows as serving only so;
#  - kmsctl ca pin: trust on first use writes the CA, --ca-pubkey checks it, a file pinning
#    another CA is never replaced, the fake cannot get pinned;
#  - cluster status exit codes: 0 serving, 3 degraded, 4 not serving, 1 unreachable;
#  - hints for http vs https and a closed port; bootstrap/onboard progress lines.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-kmsctl-tls-XXXXXX)
SIM=$WORK/sim
PORT_A=$((10000 + RANDOM % 20000))
PORT_B=$((PORT_A + 1))
PORT_C=$((PORT_A + 2))
PORT_U=$((PORT_A + 3))
PORT_CLOSED=$((PORT_A + 4))
PIDS=()
unset KMSCTL_CA
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log "$WORK"/*.txt; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    exit 1
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_url() { # url pid what
    local end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    while [ $SECONDS -lt $end ]; do
        curl -sk -o /dev/null --max-time 5 "$1/health" && return 0
        kill -0 "$2" 2>/dev/null || fail "$3 exited"
        sleep 0.1
    done
    fail "$3 did not start"
}
start_node() { # name port [kmsd args]
    local name=$1 port=$2
    shift 2
    "$KMSD" --data-dir "$WORK/$name" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
        --listen "127.0.0.1:$port" --name "$name" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}
root_ca() { # port out: the ca_cert GetTempCaCert reports
    curl -sk --max-time 10 -X POST -H 'Content-Type: application/json' -d '{}' \
        "https://127.0.0.1:$1/prpc/GetTempCaCert?json" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ca_cert"], end="")' >"$2"
    openssl x509 -noout -in "$2" || fail "no root CA from port $1"
}
expect_fail() { # code-pattern stderr-pattern cmd...: kmsctl must fail with that code and message
    local want=$1 pat=$2 rc=0
    shift 2
    "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
    [ "$rc" -ne 0 ] || fail "succeeded: $*"
    [[ "$rc" =~ ^($want)$ ]] || fail "exit $rc (want $want): $*: $(cat "$WORK/err.txt")"
    grep -q -- "$pat" "$WORK/err.txt" || fail "no '$pat' from: $*: $(cat "$WORK/err.txt")"
}
APP=0x$(printf '11%.0s' $(seq 20))
get_keys() { # url out [args]
    local url=$1 out=$2
    shift 2
    "$KMSCTL" get-keys --kms "$url" --app-id "$APP" --tee sim --insecure-sim --sim-dir "$SIM" \
        --timeout-ms 60000 --out "$out" "$@"
}

start_node a "$PORT_A" --auto-bootstrap-domain 127.0.0.1
start_node b "$PORT_B" --auto-bootstrap-domain 127.0.0.1
# c: serving, with a peer that never answers -> degraded after its first check
start_node c "$PORT_C" --auto-bootstrap-domain 127.0.0.1 --peer "https://127.0.0.1:$PORT_CLOSED" \
    --peer-interval-ms 300
start_node u "$PORT_U" # no keys: Onboard over plain HTTP
wait_url "https://127.0.0.1:$PORT_A" "${PIDS[0]}" "kmsd a"
wait_url "https://127.0.0.1:$PORT_B" "${PIDS[1]}" "kmsd b"
wait_url "https://127.0.0.1:$PORT_C" "${PIDS[2]}" "kmsd c"
wait_url "http://127.0.0.1:$PORT_U" "${PIDS[3]}" "kmsd u"
root_ca "$PORT_A" "$WORK/ca-a.pem"
root_ca "$PORT_B" "$WORK/ca-b.pem"
URL=https://127.0.0.1:$PORT_A
URL_B=https://127.0.0.1:$PORT_B

# The fake: a self-signed certificate, replaying A's GetMeta / GetTempCaCert and a "serving"
# /health. It binds port 0 and writes the port once it listens (readiness, no sleep).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -days 1 -keyout "$WORK/fake.key" -out "$WORK/fake.pem" 2>/dev/null
for m in GetMeta GetTempCaCert; do
    curl -sk --max-time 10 -X POST -d '{}' "$URL/prpc/$m?json" >"$WORK/fake-$m.json"
done
python3 - "$WORK" >"$WORK/fake.log" 2>&1 <<'PY' &
import http.server, json, os, ssl, sys
work = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(json.dumps({"state": "serving", "peers": []}).encode())
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        m = self.path.split("/")[-1].split("?")[0]
        p = os.path.join(work, "fake-%s.json" % m)
        self.answer(open(p, "rb").read() if os.path.exists(p) else b"{}")
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)  # kmsctl pre-connects
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(work, "fake.pem"), os.path.join(work, "fake.key"))
# handshake in the handler thread: an idle pre-connected socket must not block accept()
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
with open(os.path.join(work, "fake.port.tmp"), "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(os.path.join(work, "fake.port.tmp"), os.path.join(work, "fake.port"))
srv.serve_forever()
PY
PIDS+=($!)
end=$((SECONDS + 60))
until [ -s "$WORK/fake.port" ]; do
    [ $SECONDS -lt $end ] || fail "fake server did not start"
    kill -0 "${PIDS[-1]}" 2>/dev/null || fail "fake server exited"
    sleep 0.05
done
FAKE=https://127.0.0.1:$(cat "$WORK/fake.port")

# ---- 1. right CA: success, verified, no warning
"$KMSCTL" meta --kms "$URL" --ca "$WORK/ca-a.pem" >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "meta --ca A"
grep -q '"server_verified": true' "$WORK/out.txt" || fail "meta --ca: not marked verified"
grep -q '"k256_pubkey"' "$WORK/out.txt" || fail "meta --ca: no GetMeta"
grep -q "NOT verified" "$WORK/err.txt" && fail "meta --ca warned"
"$KMSCTL" cluster status --kms "$URL" --ca "$WORK/ca-a.pem" >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "status --ca A"
grep -q "verified against the pinned root CA" "$WORK/out.txt" || fail "status --ca: not verified"
"$KMSCTL" cluster status --kms "$URL" --ca "$WORK/ca-a.pem" --json >"$WORK/out.txt" ||
    fail "status --json --ca A"
grep -q '"server_verified": true' "$WORK/out.txt" || fail "status --json --ca: not verified"
KMSCTL_CA=$WORK/ca-a.pem "$KMSCTL" meta --kms "$URL" >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "meta with KMSCTL_CA"
grep -q '"server_verified": true' "$WORK/out.txt" || fail "KMSCTL_CA not used"
"$KMSCTL" cluster verify --kms "$URL" --ca "$WORK/ca-a.pem" --insecure-sim --sim-dir "$SIM" \
    --json >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "cluster verify --ca A"
grep -q '"all_agree": true' "$WORK/out.txt" || fail "cluster verify --json"
grep -q '"root_ca_pinned": true' "$WORK/out.txt" || fail "cluster verify: not pinned"
get_keys "$URL" "$WORK/keys.json" --ca "$WORK/ca-a.pem" --json >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "get-keys --ca A: $(cat "$WORK/err.txt")"
grep -q '"root_ca_pinned": true' "$WORK/out.txt" || fail "get-keys --json: not pinned"
grep -q '"disk_crypt_key"' "$WORK/keys.json" || fail "get-keys --ca A wrote no keys"
grep -q 'crypt_key' "$WORK/out.txt" && fail "get-keys --json printed keys"
grep -q "WARNING" "$WORK/err.txt" && fail "get-keys --ca warned"
echo "ok: the right cluster's root CA (option and \$KMSCTL_CA)"

# ---- 2. another cluster's CA, and the self-signed fake: refused, naming the chain
for target in "$URL_B" "$FAKE"; do
    for cmd in "meta --kms $target" "cluster status --kms $target" \
        "cluster status --json --kms $target"; do
        # shellcheck disable=SC2086
        expect_fail 1 "does not chain to the pinned CA" "$KMSCTL" $cmd --ca "$WORK/ca-a.pem"
        [ -s "$WORK/out.txt" ] && fail "$cmd printed a result with the wrong CA"
        grep -q "hint: the server's certificate was not issued by the cluster root CA" \
            "$WORK/err.txt" || fail "$cmd: no hint"
    done
    expect_fail 1 "does not chain to the pinned CA" env KMSCTL_CA="$WORK/ca-a.pem" \
        "$KMSCTL" meta --kms "$target"
    expect_fail 1 "does not chain to the pinned CA" get_keys "$target" "$WORK/k2.json" \
        --ca "$WORK/ca-a.pem"
    [ -e "$WORK/k2.json" ] && fail "get-keys wrote keys from $target"
    expect_fail 1 "failed or diverge" "$KMSCTL" cluster verify --kms "$target" \
        --ca "$WORK/ca-a.pem" --skip-attestation
    grep -q "does not chain to the pinned CA" "$WORK/out.txt" || fail "verify: $(cat "$WORK/out.txt")"
done
echo "ok: another cluster and a self-signed fake refused ($(head -c 160 "$WORK/err.txt"))"

# ---- 3. no CA: works on A, but says so; the fake shows as serving only with that warning
"$KMSCTL" meta --kms "$URL" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "meta without --ca"
grep -q "NOT verified" "$WORK/err.txt" || fail "meta without --ca: no warning"
grep -q '"server_verified": false' "$WORK/out.txt" || fail "meta without --ca: field"
"$KMSCTL" cluster status --kms "$FAKE" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "status fake"
grep -q "NOT verified" "$WORK/err.txt" || fail "status without --ca: no warning"
grep -q "NOT verified" "$WORK/out.txt" || fail "status without --ca: no line"
"$KMSCTL" cluster status --kms "$URL" --json >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "status"
grep -q '"server_verified": false' "$WORK/out.txt" || fail "status --json without --ca: field"
get_keys "$URL" "$WORK/keys3.json" >/dev/null 2>"$WORK/err.txt" || fail "get-keys without --ca"
grep -q "WARNING: no root CA pinned" "$WORK/err.txt" || fail "get-keys without --ca: no warning"
echo "ok: without a CA, output says not verified"

# ---- 4. kmsctl ca pin
PIN=$WORK/pinned.pem
"$KMSCTL" ca pin --kms "$URL" --out "$PIN" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "ca pin"
grep -q "trust on first use" "$WORK/out.txt" || fail "ca pin: TOFU not said"
cmp -s <(openssl x509 -in "$PIN" -outform DER) <(openssl x509 -in "$WORK/ca-a.pem" -outform DER) ||
    fail "ca pin wrote another CA"
"$KMSCTL" meta --kms "$URL" --ca "$PIN" >/dev/null 2>&1 || fail "the pinned file does not work"
"$KMSCTL" ca pin --kms "$URL" --out "$PIN" >"$WORK/out.txt" 2>&1 || fail "ca pin again"
grep -q "already pinned" "$WORK/out.txt" || fail "ca pin again: $(cat "$WORK/out.txt")"
cp "$PIN" "$WORK/pin.before"
expect_fail 1 "already pins ANOTHER root CA" "$KMSCTL" ca pin --kms "$URL_B" --out "$PIN"
cmp -s "$PIN" "$WORK/pin.before" || fail "ca pin replaced a pinned CA"
CA_A=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_pubkey"])' \
    "$WORK/fake-GetMeta.json")
expect_fail 1 "is not --ca-pubkey" "$KMSCTL" ca pin --kms "$URL_B" --out "$WORK/b.pem" \
    --ca-pubkey "$CA_A"
[ -e "$WORK/b.pem" ] && fail "ca pin wrote B's CA despite --ca-pubkey"
expect_fail 1 "does not chain to the pinned CA" "$KMSCTL" ca pin --kms "$FAKE" \
    --out "$WORK/f.pem"
[ -e "$WORK/f.pem" ] && fail "ca pin pinned the fake"
"$KMSCTL" ca pin --kms "$URL" --out "$WORK/a2.pem" --ca-pubkey "$CA_A" --json >"$WORK/out.txt" ||
    fail "ca pin --ca-pubkey"
grep -q '"ca_pubkey_checked": true' "$WORK/out.txt" || fail "ca pin --json"
echo "ok: ca pin (TOFU, --ca-pubkey, never replaces another CA, fake refused)"

# ---- 5. cluster status exit codes: 0 serving, 3 degraded, 4 not serving, 1 unreachable
rc=0
"$KMSCTL" cluster status --kms "$URL" >/dev/null 2>&1 || rc=$?
[ $rc -eq 0 ] || fail "serving node: exit $rc"
end=$((SECONDS + 60))
while :; do
    rc=0
    "$KMSCTL" cluster status --kms "https://127.0.0.1:$PORT_C" >"$WORK/out.txt" 2>&1 || rc=$?
    [ $rc -eq 3 ] && break
    [ $SECONDS -lt $end ] || fail "degraded node: exit $rc: $(cat "$WORK/out.txt")"
    sleep 0.2
done
grep -q "verdict: degraded" "$WORK/out.txt" || fail "degraded: no verdict line"
expect_fail 4 "" "$KMSCTL" cluster status --kms "http://127.0.0.1:$PORT_U"
grep -q "plain HTTP" "$WORK/err.txt" || fail "http status: no plain-HTTP warning"
rc=0
"$KMSCTL" cluster status --kms "http://127.0.0.1:$PORT_U" --json >"$WORK/out.txt" 2>/dev/null ||
    rc=$?
[ $rc -eq 4 ] && grep -q '"exit_status": 4' "$WORK/out.txt" || fail "--json not serving: $rc"
expect_fail 1 "nothing accepts connections" "$KMSCTL" cluster status \
    --kms "https://127.0.0.1:$PORT_CLOSED"
echo "ok: cluster status exit codes 0/3/4/1"

# ---- 6. hints: http to the TLS listener, https to the Onboard listener, a closed port
expect_fail 1 "hint: the server did not answer plain HTTP.*use https://" \
    "$KMSCTL" meta --kms "http://127.0.0.1:$PORT_A"
expect_fail 1 "hint: the server does not speak TLS there.*use http://" \
    "$KMSCTL" bootstrap --onboard-url "https://127.0.0.1:$PORT_U" --domain 127.0.0.1
expect_fail 1 "hint: nothing accepts connections there" \
    "$KMSCTL" meta --kms "https://127.0.0.1:$PORT_CLOSED" --ca "$WORK/ca-a.pem"
echo "ok: hints for http/https and port mistakes"

# ---- 7. bootstrap: progress lines, plain-HTTP warning; then pin with its ca_pubkey
"$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$PORT_U" --domain 127.0.0.1 \
    >"$WORK/boot.json" 2>"$WORK/err.txt" || fail "bootstrap u: $(cat "$WORK/err.txt")"
grep -q "\[1/2\] Bootstrap" "$WORK/err.txt" || fail "no bootstrap progress"
grep -q "\[2/2\] done" "$WORK/err.txt" || fail "no finish progress"
grep -q "plain HTTP: the answer is NOT authenticated" "$WORK/err.txt" || fail "no HTTP warning"
CA_U=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_pubkey"])' \
    "$WORK/boot.json")
wait_url "https://127.0.0.1:$PORT_U" "${PIDS[3]}" "kmsd u after bootstrap"
"$KMSCTL" ca pin --kms "https://127.0.0.1:$PORT_U" --ca-pubkey "$CA_U" --out "$WORK/u.pem" \
    >"$WORK/out.txt" 2>&1 || fail "ca pin u: $(cat "$WORK/out.txt")"
grep -q "checked against --ca-pubkey" "$WORK/out.txt" || fail "ca pin u: not checked"
echo "ok: bootstrap progress; pinned with Bootstrap's ca_pubkey"

# a file that is not a certificate
echo junk >"$WORK/junk.pem"
expect_fail 1 "not a PEM certificate" "$KMSCTL" meta --kms "$URL" --ca "$WORK/junk.pem"
echo "PASS"
