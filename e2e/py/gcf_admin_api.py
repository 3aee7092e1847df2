"""A test double of Google's Cloud Functions v2 admin API and OAuth token endpoint.

No emulator of the admin API exists, so this serves what discovery-gcf reads, in the JSON of
Google's published v2 discovery document:

  GET  /v2/projects/{p}/locations/{l}/functions?pageSize=&pageToken=
       -> ListFunctionsResponse {functions: [Function], nextPageToken, unreachable}
       (location "-" lists every location; needs "Authorization: Bearer <token>" this server
       issued and that has not expired; else 401 with Google's error JSON)
  POST /token   grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
       -> {access_token, expires_in, token_type}; the JWT's RS256 signature is verified with
       the test service account's public key, and its iss/scope/aud/iat/exp claims checked
  GET  /computeMetadata/v1/instance/service-accounts/default/token  (Metadata-Flavor: Google)

Test controls (not Google's API):
  PUT  /_test/functions  [Function, ...]       the whole set of functions
  POST /_test/fail       {"status": 429, "count": n}   the next n listings answer status (-1: all)
  GET  /_test/stats      {"token_requests", "list_requests", "bad_tokens"}
"""
import argparse
import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.functions = []
        self.tokens = {}  # token -> expiry (epoch seconds)
        self.fail_status = 0
        self.fail_count = 0
        self.stats = {"token_requests": 0, "list_requests": 0, "bad_tokens": 0}
        self.page_size = args.page_size
        self.expires_in = args.expires_in
        self.client_email = args.client_email
        with open(args.public_key, "rb") as f:
            self.public_key = serialization.load_pem_public_key(f.read())
        self.n = 0

    def issue(self):
        with self.lock:
            self.n += 1
            token = "ya29.test-%d" % self.n
            self.tokens[token] = time.time() + self.expires_in
            return token


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def google_error(self, status, message, reason):
        self.send_json(status, {"error": {"code": status, "message": message, "status": reason}})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    @property
    def state(self):
        return self.server.state

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if url.path == "/_test/stats":
            with self.state.lock:
                return self.send_json(200, dict(self.state.stats))
        if url.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.send_json(403, {"error": "missing Metadata-Flavor header"})
            with self.state.lock:
                self.state.stats["token_requests"] += 1
            return self.send_json(200, {"access_token": self.state.issue(),
                                        "expires_in": self.state.expires_in,
                                        "token_type": "Bearer"})
        if len(parts) == 6 and parts[0] == "v2" and parts[1] == "projects" and parts[3] == "locations" and parts[5] == "functions":
            return self.list_functions(parts[2], parts[4], urllib.parse.parse_qs(url.query))
        self.google_error(404, "not found: " + url.path, "NOT_FOUND")

    def list_functions(self, project, location, query):
        st = self.state
        with st.lock:
            st.stats["list_requests"] += 1
            if st.fail_count != 0:
                if st.fail_count > 0:
                    st.fail_count -= 1
                status = st.fail_status
                return self.google_error(status, "injected failure", "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL")
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with st.lock:
            expiry = st.tokens.get(token)
            if expiry is None or expiry < time.time():
                st.stats["bad_tokens"] += 1
                bad = True
            else:
                bad = False
        if bad:
            return self.google_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        prefix = "projects/%s/locations/" % project
        with st.lock:
            matching = [f for f in st.functions
                        if f["name"].startswith(prefix)
                        and (location == "-" or f["name"].split("/")[3] == location)]
        size = st.page_size
        if "pageSize" in query:
            size = min(size, max(1, int(query["pageSize"][0])))
        start = 0
        if "pageToken" in query:
            try:
                start = int(b64url_decode(query["pageToken"][0]).decode())
            except Exception:
                return self.google_error(400, "Invalid page token", "INVALID_ARGUMENT")
        page = matching[start:start + size]
        body = {"functions": page}
        if start + size < len(matching):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        self.send_json(200, body)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            return self.token()
        if url.path == "/_test/fail":
            req = json.loads(self.body() or b"{}")
            with self.state.lock:
                self.state.fail_status = int(req.get("status", 500))
                self.state.fail_count = int(req.get("count", 0))
            return self.send_json(200, {})
        self.google_error(404, "not found", "NOT_FOUND")

    def do_PUT(self):
        if self.path == "/_test/functions":
            fns = json.loads(self.body() or b"[]")
            with self.state.lock:
                self.state.functions = fns
            return self.send_json(200, {"count": len(fns)})
        self.google_error(404, "not found", "NOT_FOUND")

    def token(self):
        st = self.state
        with st.lock:
            st.stats["token_requests"] += 1
        form = urllib.parse.parse_qs(self.body().decode())
        if form.get("grant_type", [""])[0] != JWT_BEARER:
            return self.send_json(400, {"error": "unsupported_grant_type"})
        jwt = form.get("assertion", [""])[0]
        try:
            h, c, s = jwt.split(".")
            header = json.loads(b64url_decode(h))
            claims = json.loads(b64url_decode(c))
            if header.get("alg") != "RS256":
                raise ValueError("alg")
            st.public_key.verify(b64url_decode(s), (h + "." + c).encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return self.send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        now = time.time()
        audience = "http://%s:%d/token" % self.server.server_address[:2]
        problems = []
        if claims.get("iss") != st.client_email:
            problems.append("iss")
        if SCOPE not in str(claims.get("scope", "")).split():
            problems.append("scope")
        if claims.get("aud") != audience:
            problems.append("aud")
        if not (claims.get("iat", 0) <= now + 60 and claims.get("exp", 0) > now and claims["exp"] - claims["iat"] <= 3600):
            problems.append("iat/exp")
        if problems:
            return self.send_json(400, {"error": "invalid_grant", "error_description": "bad claims: " + ",".join(problems)})
        self.send_json(200, {"access_token": st.issue(), "expires_in": st.expires_in, "token_type": "Bearer"})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--public-key", required=True)
    p.add_argument("--client-email", required=True)
    p.add_argument("--page-size", type=int, default=2)
    p.add_argument("--expires-in", type=int, default=3600)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
