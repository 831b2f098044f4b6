#!/usr/bin/env python3
"""ui: kmsd's own web UI in headless chromium (label `ui`, issue 13 item 1).

Proves, against real kmsd processes on loopback and a real browser:
- the Onboard listener refuses cross-origin browser requests (Origin of another host), with
  the exact text, and leaves the node without keys; a same-origin call passes;
- the onboarding page at / loads with no CSP violation, console error or external request,
  and shows exactly GetAttestationInfo's values and the matching `kmsctl chain` commands;
- the Bootstrap form shows the server's refusal text verbatim (bad domain), Finish before keys
  shows its refusal, then a Bootstrap through the form returns the keys that /health serves
  after Finish through the page (the node then serves HTTPS, state "serving");
- the status page (/status on the serving listener) shows the state, public keys, and a
  refusal made during the test in its totals and per-minute rate; peers and identity check;
- the Onboard form on a second node: a malformed pin, a wrong k256 pin and a wrong CA pin are
  each refused with their exact text (and leave the node without keys); correct pins onboard it;
- screenshots of both pages have visible content (not blank, header and text rendered).
Exits 77 (skipped) only when chromium is missing and CI is not set.
"""
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402

BIN = os.environ.get("KMS_BIN_DIR")
KMSD = os.path.join(BIN or ".", "node", "kmsd")
DEADLINE_S = 120  # per readiness wait: generous for ASan on a loaded machine
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                     urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
PROCS = []
checks = 0


def fail(msg):
    print("FAIL: " + msg)
    for p in PROCS:
        if getattr(p, "log_path", None) and os.path.exists(p.log_path):
            with open(p.log_path, errors="replace") as f:
                print("--- %s\n%s" % (p.log_path, "".join(f.readlines()[-20:])))
    raise SystemExit(1)


def check(cond, msg):
    global checks
    if not cond:
        fail(msg)
    checks += 1


def http(method, url, body=None, timeout=30, headers=None):
    """(status, parsed JSON or text, headers); never raises for an HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    h = dict(headers or {})
    if data:
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            status, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


def start_kmsd(work, name, port, sim_dir):
    log = os.path.join(work, name + ".log")
    p = subprocess.Popen([KMSD, "--data-dir", os.path.join(work, name), "--sim-dir", sim_dir,
                          "--tee", "sim", "--insecure-sim", "--listen", "127.0.0.1:%d" % port,
                          "--name", name, "--peer-interval-ms", "500"],
                         stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    p.log_path = log
    PROCS.append(p)
    wait_health(p, "http", port, lambda st, j: True, "%s's onboard listener" % name)
    return p


def wait_health(p, scheme, port, ok, what):
    end = time.monotonic() + DEADLINE_S
    last = None
    while time.monotonic() < end:
        if p.poll() is not None:
            fail("%s: kmsd exited (%s)" % (what, p.returncode))
        try:
            st, j, _ = http("GET", "%s://127.0.0.1:%d/health" % (scheme, port), timeout=5)
            last = (st, j)
            if ok(st, j):
                return st, j
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.1)
    fail("%s not ready within %d s (last: %r)" % (what, DEADLINE_S, last))


def js_str(s):
    return json.dumps(s)


def text(page, id_):
    return page.eval("document.getElementById(%s).textContent" % js_str(id_))


def value(page, id_):
    return page.eval("document.getElementById(%s).dataset.value" % js_str(id_))


def visible(page, id_):
    return page.eval("!document.getElementById(%s).classList.contains('hidden')" % js_str(id_))


def fill(page, fields):
    for k, v in fields.items():
        page.eval("document.getElementById(%s).value = %s" % (js_str(k), js_str(v)))


def submit_and_wait(page, button, timeout=DEADLINE_S):
    """Clicks a form button and waits until the call finished (the click handler shows the
    progress line synchronously; it is hidden again when the answer is in)."""
    page.eval("document.getElementById(%s).click()" % js_str(button))
    page.wait_for("document.getElementById('progress').classList.contains('hidden')",
                  timeout, "the call started by " + button)


def check_screenshot(page, path, what):
    png = page.screenshot()
    with open(path, "wb") as f:
        f.write(png)
    colours, busy, dark = cdp.visible_content(png)
    print("%s screenshot %s: %d colours, %.1f%% non-background, %.1f%% dark" %
          (what, path, colours, busy * 100, dark * 100))
    check(colours >= 20, "%s screenshot looks blank (%d colours)" % (what, colours))
    check(busy >= 0.05, "%s screenshot has almost no content (%.3f)" % (what, busy))
    check(dark >= 0.01, "%s screenshot shows no header/text (%.3f dark)" % (what, dark))


def check_no_problems(page, what, expected_urls=()):
    probs = page.problems(expected_urls)
    # favicon.ico is not served (404); everything else must load cleanly
    probs = [p for p in probs if "favicon.ico" not in p]
    check(not probs, "%s: browser reported problems: %s" % (what, probs))


def main():
    exe = cdp.find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            fail("chromium is not installed (deploy/install-deps.sh installs it) and CI is set")
        print("SKIP: chromium not installed (apt-get install chromium)")
        return 77
    if not BIN or not os.path.exists(KMSD):
        fail("KMS_BIN_DIR must point at the build tree (no %s)" % KMSD)
    work = tempfile.mkdtemp(prefix="kms-ui-test-")
    # below the ephemeral range (32768-): outgoing connections of other tests cannot take them
    base = 10000 + random.randrange(20000)
    pa, pb = base, base + 1
    sim_dir = os.path.join(work, "sim")
    shots = os.path.join(BIN, "tests", "ui")  # screenshots stay in the build tree for review
    os.makedirs(shots, exist_ok=True)
    browser = None
    try:
        a = start_kmsd(work, "ui-a", pa, sim_dir)
        browser = cdp.Browser(exe, os.path.join(work, "chromium"), os.path.join(work, "chromium.log"))
        page = browser.new_page()

        # ---- onboarding page: values as GetAttestationInfo, commands, headers
        st, info, _ = http("POST", "http://127.0.0.1:%d/prpc/Onboard.GetAttestationInfo?json" % pa, {})
        check(st == 200 and isinstance(info, dict), "GetAttestationInfo: %s %r" % (st, info))
        st, _, hdrs = http("GET", "http://127.0.0.1:%d/" % pa)
        csp = hdrs.get("Content-Security-Policy", "")
        check(st == 200 and "script-src 'self'" in csp and "unsafe" not in csp,
              "/ must carry a strict CSP, got %r" % csp)
        check(hdrs.get("X-Content-Type-Options") == "nosniff", "/ lacks nosniff")
        check(hdrs.get("X-Frame-Options") == "DENY", "/ lacks X-Frame-Options DENY")
        # another site's page in the operator's browser cannot drive the onboard listener
        xo = {"error": "cross-origin request refused: open the onboarding page on this node's "
                       "own address"}
        for origin, path, body in (("http://evil.example", "/prpc/Onboard.Bootstrap?json",
                                    {"domain": "localhost"}),
                                   ("null", "/prpc/Onboard.GetAttestationInfo?json", {}),
                                   ("http://127.0.0.1:%d" % pb, "/finish", None)):
            st, r, _ = http("POST" if body is not None else "GET",
                            "http://127.0.0.1:%d%s" % (pa, path), body, headers={"Origin": origin})
            check(st == 403 and r == xo, "Origin %s on %s: %s %r" % (origin, path, st, r))
        st, r, _ = http("POST", "http://127.0.0.1:%d/prpc/Onboard.GetAttestationInfo?json" % pa, {},
                        headers={"Origin": "http://127.0.0.1:%d" % pa})
        check(st == 200 and r == info, "a same-origin call must pass: %s %r" % (st, r))
        check(http("GET", "http://127.0.0.1:%d/health" % pa)[0] == 503,
              "cross-origin calls must leave the node without keys")
        page.goto("http://127.0.0.1:%d/" % pa)
        page.wait_for("document.getElementById('v-device_id').dataset.value", DEADLINE_S,
                      "attestation info on the page")
        for f in ("device_id", "mr_aggregated", "os_image_hash", "ppid", "tee_variant",
                  "eth_rpc_url", "kms_contract_address"):
            check(value(page, "v-" + f) == info[f],
                  "page %s %r != GetAttestationInfo %r" % (f, value(page, "v-" + f), info[f]))
        check(value(page, "cmd-device") == "kmsctl chain add-device " + info["device_id"],
              "add-device command: %r" % value(page, "cmd-device"))
        check(value(page, "cmd-mr") == "kmsctl chain add-mr " + info["mr_aggregated"],
              "add-mr command: %r" % value(page, "cmd-mr"))
        check(value(page, "cmd-image") == "kmsctl chain add-image " + info["os_image_hash"],
              "add-image command: %r" % value(page, "cmd-image"))
        check("KMS_ETH_RPC_URL" in text(page, "register-env"),
              "the page must say which chain settings kmsctl needs")
        body = page.eval("document.body.innerText")
        for want in ("Bootstrap a new cluster", "Onboard from a running KMS", "Finish"):
            check(want in body, "page text lacks %r" % want)
        check_screenshot(page, os.path.join(shots, "onboard.png"), "onboarding page")
        check_no_problems(page, "onboarding page")

        # ---- refusals shown verbatim
        fill(page, {"bootstrap-domain": "bad domain"})
        submit_and_wait(page, "bootstrap-submit")
        st, ref, _ = http("POST", "http://127.0.0.1:%d/prpc/Onboard.Bootstrap?json" % pa,
                          {"domain": "bad domain"})
        check(st == 400 and isinstance(ref, dict), "bad domain not refused: %s %r" % (st, ref))
        check(visible(page, "error") and text(page, "error") == ref["error"],
              "page refusal %r != server's %r" % (text(page, "error"), ref["error"]))
        check(not visible(page, "result"), "a refused bootstrap must show no result")
        page.eval("document.getElementById('finish').click()")
        page.wait_for("document.getElementById('error').textContent.startsWith('no keys yet')",
                      30, "Finish refusal before keys")
        check(text(page, "error") == "no keys yet: call Bootstrap or Onboard before Finish",
              "Finish refusal text: %r" % text(page, "error"))

        # ---- bootstrap through the form, then Finish
        fill(page, {"bootstrap-domain": "localhost"})
        submit_and_wait(page, "bootstrap-submit")
        check(visible(page, "result") and not visible(page, "error"),
              "bootstrap failed in the page: %r" % text(page, "error"))
        res = json.loads(value(page, "result-json"))
        check(set(res) == {"caPubkey", "k256Pubkey", "attestation"}, "result fields: %r" % res)
        check(value(page, "cmd-setinfo") == "kmsctl chain set-info kms-info.json",
              "set-info command: %r" % value(page, "cmd-setinfo"))
        page.eval("document.getElementById('finish').click()")
        page.wait_for("!document.getElementById('finished').classList.contains('hidden') || "
                      "!document.getElementById('error').classList.contains('hidden')", 60, "Finish")
        check(visible(page, "finished"), "Finish failed: %r" % text(page, "error"))
        st, health = wait_health(a, "https", pa, lambda st, j: st == 200, "ui-a serving")
        check(health["state"] == "serving", "after Finish: %r" % health)
        check(health["k256_pubkey"] == res["k256Pubkey"] and health["ca_pubkey"] == res["caPubkey"],
              "the page's bootstrap result differs from /health: %r vs %r" % (res, health))
        check(health["domain"] == "localhost", "domain: %r" % health.get("domain"))
        check_no_problems(page, "onboarding page after Finish",
                          ("http://127.0.0.1:%d/prpc/Onboard.Bootstrap?json" % pa,
                           "http://127.0.0.1:%d/finish" % pa))

        # ---- status page on the serving listener; a refusal shows in totals and rate
        spage = browser.new_page()
        spage.goto("https://127.0.0.1:%d/status" % pa)
        spage.wait_for("document.getElementById('state').textContent === 'serving'", 60, "state")
        check(value(spage, "k256") == health["k256_pubkey"], "status k256: %r" % value(spage, "k256"))
        check(value(spage, "ca") == health["ca_pubkey"], "status CA key differs")
        check(value(spage, "domain") == "localhost", "status domain: %r" % value(spage, "domain"))
        check(text(spage, "self-auth") == "authorized", "self-auth: %r" % text(spage, "self-auth"))
        check(visible(spage, "sim-warning"), "the insecure simulation warning must show")
        before = int(value(spage, "refusals-total"))
        att_before = int(value(spage, "ref-attestation"))
        other_before = value(spage, "ref-other")
        spage.wait_for("/^[0-9.]+$/.test(document.getElementById('refusals-rate').textContent)", 30,
                       "a first rate")
        st, r, _ = http("POST", "https://127.0.0.1:%d/prpc/KMS.GetAppKey?json" % pa, {})
        check(st == 400 and r.get("error") == "No attestation provided", "GetAppKey without RA-TLS: %s %r" % (st, r))
        spage.wait_for("Number(document.getElementById('refusals-total').dataset.value) === %d && "
                       "Number(document.getElementById('refusals-rate').textContent) > 0" % (before + 1),
                       30, "the refusal in the totals and the per-minute rate")
        check(value(spage, "ref-attestation") == str(att_before + 1),
              "a request without attestation counts as attestation: %r (before %d)"
              % (value(spage, "ref-attestation"), att_before))
        check(value(spage, "ref-other") == other_before, "it does not count as other: %r (before %r)"
              % (value(spage, "ref-other"), other_before))
        check(value(spage, "released-total") == "0", "no key was released: %r" % value(spage, "released-total"))
        st, sj, hdrs = http("GET", "https://127.0.0.1:%d/status.json" % pa)
        check(st == 200 and sj["counters"]["attested_failures"] == before + 1, "status.json: %r" % sj)
        check("Content-Security-Policy" in hdrs, "status.json lacks the UI headers")
        dump = json.dumps(sj).lower()
        check("private" not in dump and "secret" not in dump and "ca_key" not in dump,
              "status.json must carry no secrets: %s" % dump)
        check(http("GET", "https://127.0.0.1:%d/" % pa)[0] == 404,
              "the onboarding page must not be on the serving listener")
        check_screenshot(spage, os.path.join(shots, "status.png"), "status page")
        check_no_problems(spage, "status page")

        # ---- onboard a second node through the form, pins refused one by one, then accepted
        b = start_kmsd(work, "ui-b", pb, sim_dir)
        # malformed pins are refused before any network call (each flips one input)
        onb = "http://127.0.0.1:%d/prpc/Onboard.Onboard?json" % pb
        src0 = {"source_url": "https://127.0.0.1:%d" % pa, "domain": "127.0.0.1"}
        for extra, want in (
                ({"expect_k256_pubkey": "zz" * 33}, "failed to decode request: expect_k256_pubkey is not hex"),
                ({"expect_ca_spki": 42}, "failed to decode request: expect_ca_spki must be a hex string"),
                ({"expect_ca_spki": "00" * 1025}, "failed to decode request: expect_ca_spki must be 1 to 1024 bytes")):
            st, r, _ = http("POST", onb, dict(src0, **extra))
            check(st == 400 and r == {"error": want}, "pins %r: %s %r" % (extra, st, r))
        page.goto("http://127.0.0.1:%d/" % pb)
        page.wait_for("document.getElementById('v-device_id').dataset.value", DEADLINE_S, "node B info")
        good_k = health["k256_pubkey"]
        good_ca = health["ca_pubkey"]
        flip = lambda h: h[:-1] + ("0" if h[-1] != "0" else "1")  # noqa: E731
        src = "https://127.0.0.1:%d" % pa
        cases = [
            (good_k[:20], "", "failed to decode request: expect_k256_pubkey must be 33 bytes (a "
                              "compressed public key, 66 hex digits)"),
            (flip(good_k), "", "source identity mismatch: k256 public key differs from the "
                               "requested expect_k256_pubkey"),
            (good_k, flip(good_ca), "source identity mismatch: root CA key differs from the "
                                    "requested expect_ca_spki"),
        ]
        for pin_k, pin_ca, want in cases:
            fill(page, {"onboard-source": src, "onboard-domain": "127.0.0.1",
                        "onboard-pin-k256": pin_k, "onboard-pin-ca": pin_ca})
            submit_and_wait(page, "onboard-submit")
            check(visible(page, "error") and text(page, "error") == want,
                  "pins %r/%r: page shows %r, want %r" % (pin_k, pin_ca, text(page, "error"), want))
            st, _, _ = http("GET", "http://127.0.0.1:%d/health" % pb)
            check(st == 503, "a refused onboarding must leave node B without keys (got %s)" % st)
        fill(page, {"onboard-source": src, "onboard-domain": "127.0.0.1",
                    "onboard-pin-k256": good_k, "onboard-pin-ca": good_ca})
        submit_and_wait(page, "onboard-submit")
        check(visible(page, "result") and not visible(page, "error"),
              "onboard with correct pins failed: %r" % text(page, "error"))
        check(json.loads(value(page, "result-json")) == {"k256Pubkey": good_k},
              "onboard result: %r" % value(page, "result-json"))
        page.eval("document.getElementById('finish').click()")
        page.wait_for("!document.getElementById('finished').classList.contains('hidden')", 60, "B Finish")
        _, hb = wait_health(b, "https", pb, lambda st, j: st == 200, "ui-b serving")
        check(hb["k256_pubkey"] == good_k and hb["ca_pubkey"] == good_ca, "node B keys: %r" % hb)

        check_no_problems(page, "node B's onboarding page",
                          ("http://127.0.0.1:%d/prpc/Onboard.Onboard?json" % pb,))

        # node A now lists B as a peer; its status page shows the identity check passing
        # (B is a candidate until one of A's checks finds it serving the cluster identity)
        end = time.monotonic() + DEADLINE_S
        peers = None
        while time.monotonic() < end:
            peers = http("GET", "https://127.0.0.1:%d/status.json" % pa)[1].get("peers")
            if peers and peers[0].get("status") == "up":
                break
            time.sleep(0.2)
        check(peers and len(peers) == 1 and peers[0]["status"] == "up",
              "A never confirmed B as a peer: %r" % peers)
        try:
            spage.wait_for("document.getElementById('identity-check').textContent === "
                           "'1 of 1 peers hold the same identity.'", 30, "A's identity check of B")
        except cdp.CDPError:
            fail("status page identity check: %r" % text(spage, "identity-check"))
        check(spage.eval("document.querySelectorAll('#peers tr').length") == 1, "peer rows")
        check_no_problems(spage, "status page with a peer")
        print("ui: all %d checks passed; screenshots in %s" % (checks, shots))
        keep = os.environ.get("KMS_UI_KEEP")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    finally:
        if browser is not None:
            browser.close()
        for p in PROCS:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)


if __name__ == "__main__":
    sys.exit(main())
