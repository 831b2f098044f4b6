"""Minimal Chrome DevTools Protocol driver for headless Debian chromium, Python 3 stdlib only.

Talks CDP over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4), so no WebSocket
client and no open debugging port. Every wait has a deadline; nothing sleeps for a fixed time
except the short poll interval while waiting for a condition.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib


def find_chromium():
    for name in (os.environ.get("KMS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class CDPError(Exception):
    pass


class Browser:
    def __init__(self, exe, profile_dir, log_path, width=1200, height=1000):
        cmd_r, cmd_w = os.pipe()  # we write commands, chromium reads fd 3
        ev_r, ev_w = os.pipe()  # chromium writes fd 4, we read
        hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(ev_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def child():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--no-pings", "--disable-domain-reliability",
                "--no-proxy-server", "--ignore-certificate-errors", "--hide-scrollbars",
                "--user-data-dir=" + profile_dir, "--window-size=%d,%d" % (width, height),
                "about:blank"]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, close_fds=False, preexec_fn=child)
        for fd in (cmd_r, ev_w, hi_r, hi_w):
            os.close(fd)
        self.wfd, self.rfd = cmd_w, ev_r
        self.buf = b""
        self.next_id = 0
        self.events = []

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("no message from chromium in time")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise CDPError("chromium closed the DevTools pipe (exit %s)" % self.proc.poll())
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=60):
        self.next_id += 1
        mid = self.next_id
        m = {"id": mid, "method": method, "params": params or {}}
        if session:
            m["sessionId"] = session
        data = json.dumps(m).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data):]
        deadline = time.monotonic() + timeout
        while True:
            r = self._read_message(deadline)
            if r.get("id") == mid:
                if "error" in r:
                    raise CDPError("%s: %s" % (method, r["error"]))
                return r.get("result", {})
            if "method" in r:
                self.events.append(r)

    def new_page(self):
        t = self.call("Target.createTarget", {"url": "about:blank"})
        s = self.call("Target.attachToTarget", {"targetId": t["targetId"], "flatten": True})
        return Page(self, s["sessionId"])


class Page:
    def __init__(self, browser, session):
        self.b = browser
        self.s = session
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")

    def call(self, method, params=None, timeout=60):
        return self.b.call(method, params, self.s, timeout)

    def goto(self, url, timeout=60):
        r = self.call("Page.navigate", {"url": url}, timeout)
        if r.get("errorText"):
            raise CDPError("navigate %s: %s" % (url, r["errorText"]))
        self.wait_for("document.readyState === 'complete'", timeout)

    def eval(self, expr, timeout=60):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            raise CDPError("eval %r: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait_for(self, expr, timeout=60, what=None):
        """Polls a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.eval(expr, timeout=max(1, deadline - time.monotonic()))
            except CDPError as e:
                last = str(e)
                if "Cannot find context" not in last and "context" not in last:
                    raise
            if last:
                return last
            time.sleep(0.05)
        raise CDPError("timed out waiting for %s (last: %r)" % (what or expr, last))

    def screenshot(self):
        r = self.call("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(r["data"])

    def problems(self, expected_urls=()):
        """Console errors, uncaught exceptions and CSP/security log entries of this session since
        the last call; failed loads of expected_urls (refusals the test caused) are left out."""
        out = []
        mine = [e for e in self.b.events if e.get("sessionId") == self.s]
        self.b.events = [e for e in self.b.events if e.get("sessionId") != self.s]
        for e in mine:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append("exception: %s" % p.get("exceptionDetails", {}).get("text"))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append("console.error: %s" % p.get("args"))
            elif e["method"] == "Log.entryAdded":
                en = p.get("entry", {})
                if en.get("source") == "network" and en.get("url") in expected_urls:
                    continue
                if en.get("level") == "error" or en.get("source") == "security":
                    out.append("log[%s/%s]: %s (%s)" % (en.get("source"), en.get("level"),
                                                        en.get("text"), en.get("url")))
        return out


def png_pixels(png):
    """Decodes an 8-bit RGB/RGBA non-interlaced PNG: (width, height, channels, rows)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos + 8 <= len(png):
        n, typ = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", data)
        elif typ == b"IDAT":
            idat += data
        elif typ == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError("unsupported PNG (depth %d, type %d)" % (depth, ctype))
    ch = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * ch
    rows, prev, p = [], bytearray(stride), 0
    for _ in range(h):
        f = raw[p]
        line = bytearray(raw[p + 1:p + 1 + stride])
        p += 1 + stride
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, ch, rows


def visible_content(png):
    """(distinct colours, share of pixels unlike the dominant colour, dark pixels share),
    sampled on every 4th pixel of every 4th row."""
    w, h, ch, rows = png_pixels(png)
    counts = {}
    total = dark = 0
    for y in range(0, h, 4):
        r = rows[y]
        for x in range(0, w, 4):
            px = r[x * ch:x * ch + 3]
            counts[px] = counts.get(px, 0) + 1
            total += 1
            if sum(px) < 3 * 90:
                dark += 1
    dominant = max(counts.values())
    return len(counts), (total - dominant) / total, dark / total
