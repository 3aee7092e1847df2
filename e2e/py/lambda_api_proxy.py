"""A fault-injecting HTTP proxy in front of a real moto, speaking AWS Lambda's REST-JSON API.

moto 5.2.5 falls short of the real Lambda API in two ways discovery-lambda depends on, and this
proxy closes exactly those gaps; every other request is forwarded to moto unchanged (method,
path, query, headers including the SigV4 Authorization, body) and moto's answer is returned
unchanged:

1. Paging. moto answers ListFunctions with every function in one response and ignores
   `MaxItems` and `Marker` (moto/awslambda/responses.py `list_functions`). The published API
   (botocore's lambda/2015-03-31/service-2.json, ListFunctions) pages: `MaxItems` (1..10000)
   and an opaque `Marker` in the query; `Functions` and `NextMarker` (present while more
   follow) in the body; and "ListFunctions returns a maximum of 50 items in each response,
   even if you set the number higher". So

     GET /2015-03-31/functions/?FunctionVersion=&MasterRegion=&MaxItems=&Marker=

   without a Marker asks moto for its whole listing (same FunctionVersion/MasterRegion), keeps
   it as a snapshot and answers the first min(MaxItems, --page-size) functions; a Marker names
   the snapshot and offset of the next page. The functions themselves are moto's, untouched.
   A bad MaxItems or an unknown Marker is InvalidParameterValueException (HTTP 400).

2. Throttling. moto never answers TooManyRequestsException. When told to, the proxy answers
   Lambda API calls the way AWS does when its request rate limit is hit:

     HTTP 429, x-amzn-ErrorType: TooManyRequestsException, x-amzn-RequestId: <uuid>,
     Retry-After: <seconds>   (the exception's `retryAfterSeconds` member is bound to this
                               header in the service model)
     {"Reason": "CallerRateLimitExceeded", "Type": "User", "message": "Rate exceeded"}

Test controls (not AWS's API):
  POST /_proxy/throttle {"count": n, "retry_after": s}  the next n Lambda API calls are
       throttled (-1: every call until told 0); Retry-After: s (default 1)
  GET  /_proxy/stats  {"lambda_requests", "throttled", "list_functions_pages",
                       "list_functions_snapshots"}
"""
import argparse
import base64
import collections
import http.client
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIST_FUNCTIONS = ("/2015-03-31/functions", "/2015-03-31/functions/")
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "content-length",
}


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.upstream = urllib.parse.urlsplit(args.upstream)
        self.page_size = args.page_size
        self.throttle_count = 0
        self.retry_after = 1
        self.snapshots = collections.OrderedDict()  # id -> [function configuration]
        self.next_snapshot = 0
        self.stats = {"lambda_requests": 0, "throttled": 0,
                      "list_functions_pages": 0, "list_functions_snapshots": 0}
        self.local = threading.local()

    def connection(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
            self.local.conn = c
        return c

    def forward(self, method, target, headers, body):
        """(status, [(header, value)], body) of moto's answer; one reconnect on a stale
        keep-alive connection."""
        for attempt in (0, 1):
            c = self.connection()
            try:
                c.request(method, target, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, r.getheaders(), data
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt:
                    raise

    def take_throttle(self):
        """Whether this Lambda API call is throttled (and Retry-After if so)."""
        with self.lock:
            self.stats["lambda_requests"] += 1
            if self.throttle_count == 0:
                return None
            if self.throttle_count > 0:
                self.throttle_count -= 1
            self.stats["throttled"] += 1
            return self.retry_after


def encode_marker(snapshot, offset):
    raw = json.dumps({"s": snapshot, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_marker(marker):
    raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4))
    m = json.loads(raw)
    return int(m["s"]), int(m["o"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def state(self):
        return self.server.state

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, headers, data):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, body, headers=()):
        headers = [("Content-Type", "application/json"),
                   ("x-amzn-RequestId", str(uuid.uuid4()))] + list(headers)
        self.send(status, headers, json.dumps(body).encode())

    def aws_error(self, status, code, body, headers=()):
        self.send_json(status, body, [("x-amzn-ErrorType", code)] + list(headers))

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.body()
        if url.path.startswith("/_proxy/"):
            return self.control(url.path, body)
        # Lambda's REST paths start with their API version date (/2015-03-31/functions,
        # /2017-03-31/tags, /2016-08-19/account-settings, ...); moto's own /moto-api is not AWS.
        if url.path[:3] == "/20":
            retry_after = self.state.take_throttle()
            if retry_after is not None:
                return self.aws_error(
                    429, "TooManyRequestsException",
                    {"Reason": "CallerRateLimitExceeded", "Type": "User",
                     "message": "Rate exceeded"},
                    [("Retry-After", str(retry_after))])
            if self.command == "GET" and url.path in LIST_FUNCTIONS:
                return self.list_functions(url, dict(self.headers.items()))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            status, out_headers, data = self.state.forward(self.command, self.path, headers, body)
        except (http.client.HTTPException, OSError) as e:
            return self.send(502, [("Content-Type", "text/plain")], ("moto: %s" % e).encode())
        self.send(status, out_headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    def list_functions(self, url, headers):
        st = self.state
        query = urllib.parse.parse_qs(url.query)
        size = st.page_size
        if "MaxItems" in query:
            try:
                asked = int(query["MaxItems"][0])
                if not 1 <= asked <= 10000:
                    raise ValueError
            except ValueError:
                return self.aws_error(400, "InvalidParameterValueException", {
                    "Type": "User",
                    "message": "1 validation error detected: Value '%s' at 'maxItems' failed to "
                               "satisfy constraint: Member must have value between 1 and 10000"
                               % query["MaxItems"][0]})
            size = min(size, asked)
        if "Marker" in query:
            try:
                snapshot, offset = decode_marker(query["Marker"][0])
                with st.lock:
                    functions = st.snapshots[snapshot]
            except Exception:
                return self.aws_error(400, "InvalidParameterValueException",
                                      {"Type": "User", "message": "Invalid marker"})
        else:
            # moto's whole listing, for the same versions and master region.
            keep = [(k, v) for k, vs in query.items() if k in ("FunctionVersion", "MasterRegion")
                    for v in vs]
            target = url.path + ("?" + urllib.parse.urlencode(keep) if keep else "")
            fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                status, out_headers, data = st.forward("GET", target, fwd, b"")
            except (http.client.HTTPException, OSError) as e:
                return self.send(502, [("Content-Type", "text/plain")], ("moto: %s" % e).encode())
            if status != 200:
                return self.send(status, out_headers, data)
            functions = json.loads(data)["Functions"]
            with st.lock:
                snapshot = st.next_snapshot
                st.next_snapshot += 1
                st.snapshots[snapshot] = functions
                while len(st.snapshots) > 16:
                    st.snapshots.popitem(last=False)
                st.stats["list_functions_snapshots"] += 1
            offset = 0
        with st.lock:
            st.stats["list_functions_pages"] += 1
        page = {"Functions": functions[offset:offset + size]}
        if offset + size < len(functions):
            page["NextMarker"] = encode_marker(snapshot, offset + size)
        self.send_json(200, page)

    def control(self, path, body):
        st = self.state
        if path == "/_proxy/stats" and self.command == "GET":
            with st.lock:
                return self.send_json(200, dict(st.stats))
        if path == "/_proxy/throttle" and self.command == "POST":
            req = json.loads(body or b"{}")
            with st.lock:
                st.throttle_count = int(req.get("count", 0))
                st.retry_after = int(req.get("retry_after", 1))
            return self.send_json(200, {})
        self.send_json(404, {"message": "no such control: " + path})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="moto's URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--page-size", type=int, default=50,
                   help="most functions per ListFunctions page (AWS: 50)")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
