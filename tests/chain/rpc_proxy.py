#!/usr/bin/env python3
"""Loopback JSON-RPC proxy for the chain tests, standing in for a load-balanced RPC.

Forwards every request to UPSTREAM unchanged, except that with --ahead N the answer to
eth_blockNumber is N blocks past the upstream head: the eth_blockNumber backend is ahead of the
one that answers eth_call, which then says "BlockOutOfRangeError" for the newest block.
Listens on 127.0.0.1:PORT and prints "listening PORT" once bound. PORT 0 picks a free port
below the kernel's ephemeral range: the tests restart the proxy on the same port (the node's
--eth-rpc names it), and an ephemeral port could meanwhile be taken by any outgoing connection.
Every upstream call has a 5 s timeout.
"""
import argparse
import errno
import json
import random
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--ahead", type=int, default=0)
    args = ap.parse_args()

    def forward(body):
        req = urllib.request.Request(args.upstream, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read(MAX_BODY)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            if n < 0 or n > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(n)
            out = forward(body)
            try:
                req = json.loads(body)
            except ValueError:
                req = None
            if args.ahead and isinstance(req, dict) and req.get("method") == "eth_blockNumber":
                res = json.loads(out)
                if isinstance(res.get("result"), str):
                    res["result"] = hex(int(res["result"], 16) + args.ahead)
                    out = json.dumps(res).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, fmt, *a):
            pass

    srv = None
    if args.port == 0:
        for _ in range(200):
            try:
                srv = ThreadingHTTPServer(("127.0.0.1", random.randrange(20000, 32000)), Handler)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
    else:
        deadline = time.monotonic() + 10
        while srv is None:
            try:
                srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    if srv is None:
        print("no free port below the ephemeral range", file=sys.stderr)
        return 1
    print("listening", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
