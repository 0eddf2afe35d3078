#!/usr/bin/env python3
"""A loopback registry that only refuses: /v2/login/* answers 401 with a Bearer
WWW-Authenticate challenge whose /token endpoint hands out an anonymous token that
never grants anything (as Docker Hub does for a repository that does not exist or
is private), /v2/denied/* answers 403
(credentials refused), anything else under /v2/<repo>/ 404, /v2/ itself 200.
Used by tests/integration/errors.bats to check that pyxis tells the three apart.

usage: refusing_registry.py PORT PIDFILE   (binds 127.0.0.1 only)
"""
import http.server
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, body=True):
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/", "/token"):
            code, headers = 200, {}
        elif path.startswith("/v2/login/"):
            code, headers = 401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:%d/token",service="pyxis-test",scope="repository:login:pull"' % self.server.server_port}
        elif path.startswith("/v2/denied/"):
            code, headers = 403, {}
        else:
            code, headers = 404, {}
        if path == "/token":
            payload = b'{"token":"anonymous","access_token":"anonymous"}'
        else:
            payload = b'{"errors":[{"code":"%s"}]}' % {
                200: b"OK", 401: b"UNAUTHORIZED", 403: b"DENIED", 404: b"NAME_UNKNOWN"}[code]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):
        self.answer()

    def do_HEAD(self):
        self.answer(body=False)

    def log_message(self, *args):
        pass


def main():
    port, pidfile = int(sys.argv[1]), sys.argv[2]
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    with open(pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(pidfile + ".tmp", pidfile)
    server.serve_forever()


if __name__ == "__main__":
    main()
