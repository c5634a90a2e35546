#!/usr/bin/env python3
"""A logging HTTP proxy: counts the chat requests in flight between gatt and a server.

Usage: inflight_proxy.py LISTEN_PORT UPSTREAM_BASE LOG.jsonl

Forwards every request to UPSTREAM_BASE (e.g. http://127.0.0.1:8000) as it is (standard
library only) and appends one JSON line to LOG.jsonl each time a POST starts or ends:
{"t": seconds since the proxy started, "event": "start"|"end", "in_flight": count after
the event, "status": HTTP status on "end"}. `summarize LOG.jsonl` (second form:
`inflight_proxy.py summarize LOG.jsonl`) prints the time the count spent at each value
between the first start and the last end, and how often it dropped to zero while more
requests followed (the gaps between turns that issue 18 wants gone).
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

T0 = time.time()
LOCK = threading.Lock()
STATE = {"in_flight": 0}


def log(path, event, status=None):
    with LOCK:
        STATE["in_flight"] += 1 if event == "start" else -1
        line = {"t": round(time.time() - T0, 4), "event": event, "in_flight": STATE["in_flight"]}
        if status is not None:
            line["status"] = status
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def make_handler(upstream, log_path):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            req = urllib.request.Request(upstream + self.path, data=body, method=method)
            for k, v in self.headers.items():
                if k.lower() not in ("host", "content-length", "connection"):
                    req.add_header(k, v)
            counted = method == "POST"
            if counted:
                log(log_path, "start")
            status = 502
            try:
                try:
                    with urllib.request.urlopen(req, timeout=3600) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
                except Exception as e:  # upstream down or reset
                    status, data, ctype = 502, str(e).encode(), "text/plain"
            finally:
                if counted:
                    log(log_path, "end", status)
            self.send_response(status)
            self.send_header("Content-Type", ctype or "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.forward("GET")

        def do_POST(self):
            self.forward("POST")

    return Handler


def summarize(path):
    events = [json.loads(l) for l in open(path)]
    if not events:
        print(json.dumps({"requests": 0}))
        return
    at = {}
    zero_gaps = []
    for a, b in zip(events, events[1:]):
        at[a["in_flight"]] = at.get(a["in_flight"], 0.0) + (b["t"] - a["t"])
        if a["in_flight"] == 0:
            zero_gaps.append(b["t"] - a["t"])
    span = events[-1]["t"] - events[0]["t"]
    starts = sum(1 for e in events if e["event"] == "start")
    busy = sum(v * k for k, v in at.items())
    print(json.dumps({
        "requests": starts,
        "span_s": round(span, 2),
        "mean_in_flight": round(busy / span, 2) if span else None,
        "max_in_flight": max(e["in_flight"] for e in events),
        "seconds_at": {str(k): round(v, 2) for k, v in sorted(at.items())},
        "drops_to_zero": len(zero_gaps),
        "zero_gap_s": {"total": round(sum(zero_gaps), 2),
                       "max": round(max(zero_gaps), 3) if zero_gaps else 0.0},
    }))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "summarize":
        summarize(sys.argv[2])
        return
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    port, upstream, log_path = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
    open(log_path, "w").close()
    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A client closing an idle kept-alive connection is not an error.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", port), make_handler(upstream, log_path))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
