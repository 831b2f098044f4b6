#!/usr/bin/env bash
# Integration: disaster recovery end to end (DESIGN.md §1). A kmsd node bootstraps (sim TEE,
# --auto-bootstrap-domain) and serves an app's keys; it is stopped; `kmsctl backup create` makes
# a 3-of-5 backup; the node's data dir is deleted (the region is lost); `kmsctl backup restore`
# with 3 shares (another subset than 1,2,3) rebuilds a keystore in a new data dir; kmsd started
# there serves byte-identical keys for the same app and the same GetMeta identity. Refusals:
# 2 shares, a mistyped share (named), a share of another backup, a modified backup byte, a
# restore into a keystore that has keys. `kmsctl audit verify` passes on the node's keystore and
# fails (naming the row) after one byte of an audit row is flipped with the sqlite3 CLI.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-recovery-test-XXXXXX)
SIM=$WORK/sim
PORT=$((10000 + RANDOM % 20000))
APP_ID=5fe2b2c0dc2a8b1d4d6a2b0c8c8e1f4a9b3d7e60
PID=
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    exit 1
}
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
command -v sqlite3 >/dev/null || { echo "sqlite3 CLI missing"; exit 1; }

start_node() { # data_dir log [extra args]
    local dir=$1 log=$2
    shift 2
    "$KMSD" --data-dir "$dir" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
        --listen "127.0.0.1:$PORT" --name recovery "$@" >"$WORK/$log" 2>&1 &
    PID=$!
    local end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    while [ $SECONDS -lt $end ]; do
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$PORT/health" && return 0
        kill -0 "$PID" 2>/dev/null || fail "kmsd exited"
        sleep 0.1
    done
    fail "kmsd did not start serving"
}
stop_node() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
get_keys() { # out
    "$KMSCTL" get-keys --kms "https://127.0.0.1:$PORT" --app-id "$APP_ID" --timeout-ms 60000 \
        --tee sim --insecure-sim --sim-dir "$SIM" --out "$1" >/dev/null || fail "get-keys"
}
# app keys; certificates are re-issued at each start (new serial), so only their keys compare
keys() { grep -E '"(disk_crypt_key|env_crypt_key|k256_key|k256_signature)"' "$1" | sort; }
ca_key() { # public key of the app key response's ca_cert
    grep '"ca_cert"' "$1" | sed 's/.*"ca_cert": "\(.*\)".*/\1/; s/\\n/\n/g' |
        openssl x509 -noout -pubkey
}
meta_id() { "$KMSCTL" meta --kms "https://127.0.0.1:$PORT" | grep -E '"(k256_pubkey|ca_pubkey)"' | sort; }
expect_fail() { # name expected-substring command...
    local name=$1 want=$2
    shift 2
    if "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then fail "$name: succeeded"; fi
    grep -qF -- "$want" "$WORK/err.txt" || fail "$name: error lacks '$want': $(cat "$WORK/err.txt")"
    echo "ok: $name refused ($(head -c 160 "$WORK/err.txt" | tr '\n' ' '))"
}

# 1. a bootstrapped node serves the app
start_node "$WORK/node" node.log --auto-bootstrap-domain 127.0.0.1
get_keys "$WORK/keys.before.json"
meta_id >"$WORK/meta.before"
grep -q '"disk_crypt_key"' "$WORK/keys.before.json" || fail "no keys before"
stop_node

# 2. backup 3-of-5 (node stopped), shares in their own directory
"$KMSCTL" backup create --data-dir "$WORK/node" --out "$WORK/id.kbk" --shares 5 --threshold 3 \
    --share-dir "$WORK/shares" >"$WORK/create.txt" || fail "backup create"
cat "$WORK/create.txt"
for i in 1 2 3 4 5; do
    [ "$(stat -c %a "$WORK/shares/share-$i.txt")" = 600 ] || fail "share-$i.txt is not 0600"
done
[ "$(stat -c %a "$WORK/id.kbk")" = 600 ] || fail "backup is not 0600"
# no share (secret) reached stdout
grep -q "kmsd-share-v1" "$WORK/create.txt" && fail "create printed a share without --print-shares"
expect_fail "overwriting a backup" "refusing to overwrite" \
    "$KMSCTL" backup create --data-dir "$WORK/node" --out "$WORK/id.kbk" --shares 5 --threshold 3 \
    --share-dir "$WORK/shares2"
"$KMSCTL" backup inspect "$WORK/id.kbk" >"$WORK/inspect.txt" || fail "inspect"
cat "$WORK/inspect.txt"
grep -q "any 3 of 5" "$WORK/inspect.txt" || fail "inspect: M-of-N"
pub=$(grep '"k256_pubkey"' "$WORK/meta.before" | sed 's/.*"\(0x[0-9a-f]*\)".*/\1/')
grep -q "k256 pubkey: *$pub" "$WORK/inspect.txt" || fail "inspect k256 ($pub) differs from GetMeta"
spki=$(grep '"ca_pubkey"' "$WORK/meta.before" | sed 's/.*"\(0x[0-9a-f]*\)".*/\1/')
grep -q "root CA SPKI: *$spki" "$WORK/inspect.txt" || fail "inspect root CA SPKI differs from GetMeta"

# --json (kmsctl prints every result as JSON on request; shares never go into JSON)
"$KMSCTL" backup inspect --json "$WORK/id.kbk" >"$WORK/inspect.json" || fail "inspect --json"
python3 - "$WORK/inspect.json" "$pub" "$spki" <<'PY' || fail "inspect --json: $(cat "$WORK/inspect.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["threshold"] == 3 and r["shares"] == 5, r
assert r["k256_pubkey"] == sys.argv[2].split()[0], (r["k256_pubkey"], sys.argv[2])
assert r["ca_spki"] == sys.argv[3].split()[0], r
PY
expect_fail "backup create --json --print-shares" "would put the shares into a JSON" \
    "$KMSCTL" backup create --data-dir "$WORK/node" --out "$WORK/x.kbk" --shares 5 --threshold 3 \
    --print-shares --json
[ -e "$WORK/x.kbk" ] && fail "--json --print-shares wrote a backup"

# a second, unrelated backup (its shares must not mix with the first's)
"$KMSCTL" backup create --data-dir "$WORK/node" --out "$WORK/other.kbk" --shares 5 \
    --threshold 3 --print-shares >"$WORK/other.shares" 2>/dev/null || fail "second backup"
[ "$(grep -c '^kmsd-share-v1:3:5:' "$WORK/other.shares")" = 5 ] || fail "--print-shares output"

# 3. audit log of the original node: intact, then broken by one flipped byte
"$KMSCTL" audit verify --data-dir "$WORK/node" >"$WORK/audit.txt" || fail "audit verify"
cat "$WORK/audit.txt"
head=$(sed -n 's/^head: //p' "$WORK/audit.txt")
"$KMSCTL" audit show --data-dir "$WORK/node" --last 3 >"$WORK/show.txt" || fail "audit show"
cat "$WORK/show.txt"
grep -q "Backup created" "$WORK/show.txt" || fail "audit show lacks the backup rows"
grep -q "GetAppKey" <("$KMSCTL" audit show --data-dir "$WORK/node") || fail "no GetAppKey row"
"$KMSCTL" audit verify --data-dir "$WORK/node" --anchor "$head" >/dev/null || fail "anchor"
"$KMSCTL" audit verify --data-dir "$WORK/node" --json >"$WORK/audit.json" || fail "audit verify --json"
"$KMSCTL" audit show --data-dir "$WORK/node" --last 3 --json >"$WORK/show.json" || fail "show --json"
python3 - "$WORK/audit.json" "$WORK/show.json" "$head" <<'PY' || fail "audit --json"
import json, sys
v = json.load(open(sys.argv[1]))
rows = json.load(open(sys.argv[2]))
assert v["intact"] is True and "%d:%s" % (v["rows"], v["last_hash"]) == sys.argv[3], v
assert len(rows) == 3 and any(r["event"] == "Backup" for r in rows), rows
assert rows[-1]["id"] == v["rows"] and "0x" + rows[-1]["hash"] == v["last_hash"], (rows, v)
PY
n=${head%%:*}
expect_fail "a rewritten anchored row" "no longer has the anchored hash" \
    "$KMSCTL" audit verify --data-dir "$WORK/node" --anchor "$n:0x$(printf '%064d' 7)"
expect_fail "an anchor past the end (log cut off)" "is gone" \
    "$KMSCTL" audit verify --data-dir "$WORK/node" --anchor "$((n + 5)):${head#*:}"
expect_fail "audit verify without a keystore" "no keystore in" \
    "$KMSCTL" audit verify --data-dir "$WORK/nowhere"
[ -e "$WORK/nowhere" ] && fail "audit verify created a data dir"
row=$(sqlite3 "$WORK/node/kms.db" "SELECT min(id) FROM audit WHERE event = 'GetAppKey'")
before=$(sqlite3 "$WORK/node/kms.db" "SELECT detail FROM audit WHERE id = $row")
# flip the low bit of the 5th character of that row's detail (the trigger that keeps ordinary SQL
# from editing the log is dropped first, as an attacker with file access would)
sqlite3 "$WORK/node/kms.db" "DROP TRIGGER audit_no_update;
    UPDATE audit SET detail = substr(detail, 1, 4)
        || char(unicode(substr(detail, 5, 1)) + 1 - 2 * (unicode(substr(detail, 5, 1)) % 2))
        || substr(detail, 6) WHERE id = $row;"
after=$(sqlite3 "$WORK/node/kms.db" "SELECT detail FROM audit WHERE id = $row")
[ "$before" != "$after" ] && [ ${#before} = ${#after} ] || fail "the audit byte flip did not happen"
expect_fail "audit verify of a flipped byte" "audit log broken at row $row" \
    "$KMSCTL" audit verify --data-dir "$WORK/node"

# 4. the region is lost
rm -rf "$WORK/node"

# 5. refusals, each leaving no keys behind
expect_fail "restore with 2 shares" "needs 3 of its 5 shares" \
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/id.kbk" \
    --share "$WORK/shares/share-2.txt" --share "$WORK/shares/share-4.txt"
[ -e "$WORK/new/kms.db" ] && fail "a failed restore created a keystore"
line=$(grep '^kmsd-share' "$WORK/shares/share-4.txt")
val=$(echo "$line" | cut -d: -f6)
c=${val:9:1}
[ "$c" = 0 ] && nc=1 || nc=0
echo "$line" | cut -d: -f1-5 | tr -d '\n' >"$WORK/typo.txt"
echo ":${val:0:9}$nc${val:10}:$(echo "$line" | cut -d: -f7)" >>"$WORK/typo.txt"
cmp -s "$WORK/typo.txt" "$WORK/shares/share-4.txt" && fail "typo share equals the original"
expect_fail "a mistyped share" "share $WORK/typo.txt (index 4) fails its checksum" \
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/id.kbk" \
    --share "$WORK/shares/share-2.txt" --share "$WORK/typo.txt" --share "$WORK/shares/share-5.txt"
sed -n 3p "$WORK/other.shares" >"$WORK/foreign.txt"
expect_fail "a share of another backup" "belongs to another backup" \
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/id.kbk" \
    --share "$WORK/shares/share-2.txt" --share "$WORK/foreign.txt" --share "$WORK/shares/share-5.txt"
cp "$WORK/id.kbk" "$WORK/tampered.kbk"
size=$(stat -c %s "$WORK/tampered.kbk")
off=$((size - 40))
b=$(od -An -tu1 -j "$off" -N1 "$WORK/tampered.kbk" | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$WORK/tampered.kbk" bs=1 seek="$off" conv=notrunc 2>/dev/null
expect_fail "a modified backup" "failed authentication" \
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/tampered.kbk" \
    --share "$WORK/shares/share-2.txt" --share "$WORK/shares/share-4.txt" --share "$WORK/shares/share-5.txt"
[ -e "$WORK/new/kms.db" ] && fail "a failed restore created a keystore"

# 6. restore on new hardware from shares 2, 4, 5 (2 as a file, 4 and 5 on stdin)
grep -h '^kmsd-share' "$WORK/shares/share-4.txt" "$WORK/shares/share-5.txt" |
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/id.kbk" \
        --share "$WORK/shares/share-2.txt" --share - >"$WORK/restore.txt" ||
    fail "restore: $(cat "$WORK/restore.txt")"
cat "$WORK/restore.txt"
expect_fail "a second restore into a keystore with keys" "already holds keys" \
    "$KMSCTL" backup restore --data-dir "$WORK/new" --backup "$WORK/id.kbk" \
    --share "$WORK/shares/share-1.txt" --share "$WORK/shares/share-3.txt" --share "$WORK/shares/share-5.txt"

# 7. the restored node serves the same keys and the same identity
start_node "$WORK/new" new.log
get_keys "$WORK/keys.after.json"
meta_id >"$WORK/meta.after"
[ -n "$(keys "$WORK/keys.before.json")" ] || fail "no keys parsed"
[ "$(keys "$WORK/keys.before.json")" = "$(keys "$WORK/keys.after.json")" ] ||
    fail "keys differ after restore"
cmp -s "$WORK/meta.before" "$WORK/meta.after" || fail "GetMeta identity differs after restore"
if command -v openssl >/dev/null; then
    [ -n "$(ca_key "$WORK/keys.before.json")" ] &&
        [ "$(ca_key "$WORK/keys.before.json")" = "$(ca_key "$WORK/keys.after.json")" ] ||
        fail "the app CA certificate's key differs after restore"
fi
stop_node
"$KMSCTL" audit show --data-dir "$WORK/new" | grep -q "Restore ok $WORK/id.kbk share set" ||
    fail "no Restore audit row"
"$KMSCTL" audit verify --data-dir "$WORK/new" >/dev/null || fail "restored node's audit log"
echo "recovery integration: all checks passed"
rm -rf "$WORK"
