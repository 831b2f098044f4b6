#!/usr/bin/env bash
# Integration: the Admin listener of kmsd (node/admin.c, DESIGN.md §3). Proves: a call without a
# token or with a wrong one is refused with 401 {"error": "admin token required"}, counted in
# /metrics and audited; the right token works as Bearer and as X-Admin-Token; AddPeer shows in
# /health; RemovePeer removes it and the removal survives a restart (also for a --peer
# option); AuditHead's count grows by exactly the admin calls made; ClearImageCache accepts
# empty/all/hex and refuses a path; kmsctl admin drives all of it; a non-loopback
# --admin-listen, a token file readable by others, and --admin-listen without a token file are
# refused at start.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
CTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-admin-test-XXXXXX)
BASE=$((10000 + RANDOM % 20000))
P=$BASE          # KMS HTTPS
A=$((BASE + 1))  # admin
DEAD1=$((BASE + 2))
DEAD2=$((BASE + 3))
PID=
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
echo >>"$WORK/token"
chmod 600 "$WORK/token"
TOKEN=$(tr -d '\n' <"$WORK/token")
echo "wrong-token-0123456789abcdef" >"$WORK/wrong"
chmod 600 "$WORK/wrong"

COMMON=(--data-dir "$WORK/node" --tee sim --insecure-sim --listen "127.0.0.1:$P"
        --auto-bootstrap-domain localhost --peer-interval-ms 500)

start() { # extra args...
    "$KMSD" "${COMMON[@]}" "$@" >>"$WORK/node.log" 2>&1 &
    PID=$!
    local end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    while [ $SECONDS -lt $end ]; do
        # A bare connect: an HTTP probe would count as an unauthorized admin call. The admin
        # listener starts after the KMS listener, so both accept once it does.
        if (: <"/dev/tcp/127.0.0.1/$A") 2>/dev/null; then return 0; fi
        kill -0 "$PID" 2>/dev/null || fail "kmsd exited at start"
        sleep 0.1
    done
    fail "admin listener did not come up"
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
# admin METHOD BODY [curl header args...] -> prints "<json> <http code>"
admin() {
    local m=$1 body=$2
    shift 2
    curl -s -w ' %{http_code}' -H 'Content-Type: application/json' "$@" -d "$body" \
        "http://127.0.0.1:$A/prpc/Admin.$m?json"
}
refused_at_start() { # expected-substring args...
    local want=$1
    shift
    if timeout 20 "$KMSD" "${COMMON[@]}" "$@" >"$WORK/refused.log" 2>&1; then
        fail "kmsd started with $*"
    fi
    grep -q -- "$want" "$WORK/refused.log" || fail "no '$want' in: $(cat "$WORK/refused.log")"
}

# ---- refusals at start (each flips one input of a good setup)
refused_at_start "not a loopback address" --admin-listen "0.0.0.0:$A" --admin-token-file "$WORK/token"
refused_at_start "not a loopback address" --admin-listen "10.1.2.3:$A" --admin-token-file "$WORK/token"
cp "$WORK/token" "$WORK/token644"
chmod 644 "$WORK/token644"
refused_at_start "must not be accessible by group or others" --admin-listen "127.0.0.1:$A" \
    --admin-token-file "$WORK/token644"
chmod 640 "$WORK/token644"
refused_at_start "must not be accessible by group or others" --admin-listen "127.0.0.1:$A" \
    --admin-token-file "$WORK/token644"
refused_at_start "needs --admin-token-file" --admin-listen "127.0.0.1:$A"
refused_at_start "apply to --admin-listen only" --admin-token-file "$WORK/token"
echo "short" >"$WORK/short"
chmod 600 "$WORK/short"
refused_at_start "the token must be 16 to 1024 characters" --admin-listen "127.0.0.1:$A" \
    --admin-token-file "$WORK/short"
# --admin-allow-remote is what lets the non-loopback address through.
start --admin-listen "0.0.0.0:$A" --admin-token-file "$WORK/token" --admin-allow-remote
r=$(admin ListPeers '{}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 200 ] || fail "--admin-allow-remote listener: $r"
stop

# ---- the serving node, with a configured (dead) peer
start --admin-listen "127.0.0.1:$A" --admin-token-file "$WORK/token" --peer "https://127.0.0.1:$DEAD2"

r=$(admin ListPeers '{}')
[ "${r##* }" = 401 ] || fail "no token: want 401, got $r"
echo "$r" | grep -q '"error": "admin token required"' || fail "no token: body $r"
r=$(admin ListPeers '{}' -H "X-Admin-Token: wrong-token-0123456789abcdef")
[ "${r##* }" = 401 ] || fail "wrong X-Admin-Token: want 401, got $r"
r=$(admin ListPeers '{}' -H "Authorization: Bearer wrong-token-0123456789abcdef")
[ "${r##* }" = 401 ] || fail "wrong Bearer: want 401, got $r"
r=$(admin ListPeers '{}' -H "Authorization: Basic $TOKEN")
[ "${r##* }" = 401 ] || fail "right token under another scheme: want 401, got $r"
r=$(admin ListPeers '{}' -H "Authorization: Bearer $TOKEN")
[ "${r##* }" = 200 ] || fail "Bearer token: want 200, got $r"
echo "$r" | grep -q "https://127.0.0.1:$DEAD2" || fail "ListPeers lacks the --peer: $r"
r=$(admin ListPeers '{}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 200 ] || fail "X-Admin-Token: want 200, got $r"
m=$(curl -sk "https://127.0.0.1:$P/metrics")
echo "$m" | grep -qx 'kmsd_admin_unauthorized_total 4' || fail "metrics: $(echo "$m" | grep admin)"
echo "$m" | grep -qx 'kmsd_admin_requests_total 2' || fail "metrics: $(echo "$m" | grep admin)"
# Not on the KMS listener.
r=$(curl -sk -o /dev/null -w '%{http_code}' -H "X-Admin-Token: $TOKEN" -d '{}' \
    "https://127.0.0.1:$P/prpc/Admin.ListPeers?json")
[ "$r" != 200 ] || fail "the KMS listener answered an Admin call"

# ---- kmsctl admin; audit-head grows by exactly the calls made
K=(--admin "http://127.0.0.1:$A" --token-file "$WORK/token")
c1=$("$CTL" admin audit-head "${K[@]}" | awk '/^count/ {print $2}')
"$CTL" admin peers "${K[@]}" >"$WORK/peers.txt" || fail "kmsctl admin peers"
grep -q "https://127.0.0.1:$DEAD2" "$WORK/peers.txt" || fail "peers: $(cat "$WORK/peers.txt")"
c2=$("$CTL" admin audit-head "${K[@]}" --json | sed -n 's/.*"count": \([0-9]*\).*/\1/p')
[ "$c2" -eq $((c1 + 2)) ] || fail "audit-head: $c1 then $c2 (want +2: audit-head, peers)"
if "$CTL" admin peers --admin "http://127.0.0.1:$A" --token-file "$WORK/wrong" 2>"$WORK/err.txt"; then
    fail "kmsctl with a wrong token succeeded"
fi
grep -q "admin token required" "$WORK/err.txt" || fail "kmsctl wrong token: $(cat "$WORK/err.txt")"
# plain HTTP is said plainly; --ca is for an https:// admin URL only (usage error, nothing sent)
"$CTL" admin peers "${K[@]}" 2>"$WORK/err.txt" >/dev/null || fail "kmsctl admin peers (stderr)"
grep -q "is plain HTTP: the answer is not authenticated" "$WORK/err.txt" || fail "no plain-HTTP note"
rc=0
"$CTL" admin peers "${K[@]}" --ca "$WORK/token" 2>"$WORK/err.txt" >/dev/null || rc=$?
[ $rc -eq 2 ] && grep -q "applies to an https:// --admin URL only" "$WORK/err.txt" ||
    fail "--ca with http://: exit $rc: $(cat "$WORK/err.txt")"

# ---- AddPeer -> /health lists it; RemovePeer -> gone, and still gone after a restart
"$CTL" admin add-peer "https://127.0.0.1:$DEAD1/prpc" "${K[@]}" | grep -q "^added https://127.0.0.1:$DEAD1$" ||
    fail "add-peer"
"$CTL" admin add-peer "https://127.0.0.1:$DEAD1" "${K[@]}" | grep -q "already listed" ||
    fail "second add-peer should say already listed"
curl -sk "https://127.0.0.1:$P/health" | grep -q "\"url\": \"https://127.0.0.1:$DEAD1\"" ||
    fail "/health lacks the added peer"
r=$(admin AddPeer '{"url":"http://127.0.0.1:1"}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "https://" || fail "AddPeer http:// URL: $r"
r=$(admin AddPeer '{}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "field url" || fail "AddPeer without url: $r"
r=$(admin AddPeer '{"url":"https://localhost:'"$P"'"}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "own URL" || fail "AddPeer of itself: $r"
"$CTL" admin remove-peer "https://127.0.0.1:$DEAD1" "${K[@]}" | grep -q "^removed" || fail "remove-peer"
"$CTL" admin remove-peer "https://127.0.0.1:$DEAD2" "${K[@]}" >/dev/null || fail "remove-peer of --peer"
if "$CTL" admin remove-peer "https://127.0.0.1:$DEAD1" "${K[@]}" 2>"$WORK/err.txt"; then
    fail "removing an absent peer succeeded"
fi
grep -q "is not in the peer list" "$WORK/err.txt" || fail "remove absent: $(cat "$WORK/err.txt")"
h=$(curl -sk "https://127.0.0.1:$P/health")
echo "$h" | grep -q "127.0.0.1:$DEAD1" && fail "/health still lists the removed peer"
echo "$h" | grep -q "127.0.0.1:$DEAD2" && fail "/health still lists the removed --peer"

# ---- ClearImageCache: empty, all or hex; anything else refused
r=$(admin ClearImageCache '{"image_hash":"all","config_hash":""}' -H "X-Admin-Token: $TOKEN")
[ "$r" = "null 200" ] || fail "ClearImageCache all: $r"
r=$(admin ClearImageCache '{"image_hash":"","config_hash":"0aF9"}' -H "X-Admin-Token: $TOKEN")
[ "$r" = "null 200" ] || fail "ClearImageCache hex: $r"
r=$(admin ClearImageCache '{"image_hash":"../etc"}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "image_hash must be empty" || fail "ClearImageCache path: $r"
r=$(admin ClearImageCache '{"config_hash":"0xab"}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "config_hash must be empty" || fail "ClearImageCache 0x: $r"
r=$(admin NoSuchMethod '{}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 400 ] && echo "$r" | grep -q "method not found" || fail "unknown method: $r"

# ---- restart with the same --peer: the removals hold
stop
start --admin-listen "127.0.0.1:$A" --admin-token-file "$WORK/token" --peer "https://127.0.0.1:$DEAD2"
r=$(admin ListPeers '{}' -H "X-Admin-Token: $TOKEN")
[ "${r##* }" = 200 ] || fail "ListPeers after restart: $r"
echo "$r" | grep -q "127.0.0.1:$DEAD1" && fail "removed peer back after restart: $r"
echo "$r" | grep -q "127.0.0.1:$DEAD2" && fail "removed --peer back after restart: $r"
# An explicit add undoes the removal of the --peer, and that too survives a restart.
"$CTL" admin add-peer "https://127.0.0.1:$DEAD2" "${K[@]}" >/dev/null || fail "re-add"
stop
start --admin-listen "127.0.0.1:$A" --admin-token-file "$WORK/token" --peer "https://127.0.0.1:$DEAD2"
r=$(admin ListPeers '{}' -H "X-Admin-Token: $TOKEN")
echo "$r" | grep -q "127.0.0.1:$DEAD2" || fail "re-added peer gone after restart: $r"
stop

# ---- the audit log has the refused and the accepted calls
"$CTL" audit show --data-dir "$WORK/node" --last 200 >"$WORK/audit.txt" || fail "audit show"
grep -q "Admin.ListPeers unauthorized no admin token presented" "$WORK/audit.txt" || fail "audit: no-token row"
grep -q "Admin.ListPeers unauthorized wrong admin token" "$WORK/audit.txt" || fail "audit: wrong-token row"
grep -q "Admin.AddPeer ok https://127.0.0.1:$DEAD1" "$WORK/audit.txt" || fail "audit: AddPeer row"
grep -q "Admin.RemovePeer ok https://127.0.0.1:$DEAD1" "$WORK/audit.txt" || fail "audit: RemovePeer row"
grep -q "Admin.ClearImageCache error" "$WORK/audit.txt" || fail "audit: refused ClearImageCache row"
grep -q "$TOKEN" "$WORK/audit.txt" "$WORK/node.log" && fail "the token appears in the audit log or the log"
"$CTL" audit verify --data-dir "$WORK/node" >/dev/null || fail "audit chain does not verify"
echo "admin integration: all checks passed"
rm -rf "$WORK"
