"""A loopback stand-in for the few Hub API endpoints an upload uses, so push tests run offline.

It answers repo creation, pre-upload (every file "regular", i.e. inlined in the commit) and commits,
and keeps what was pushed in ``repos``, so tests can assert on exactly the files that reached the "Hub".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubStub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path))
                self._reply(404, {"error": "not in the stub"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append(("POST", self.path))
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    stub.repos.setdefault(repo, {})
                    return self._reply(200, {"url": f"{stub.endpoint}/{repo}", "name": repo})
                if self.path == "/api/validate-yaml":  # model-card metadata check: accept
                    return self._reply(200, {})
                m = re.fullmatch(r"/api/models/(.+?)/(preupload|commit)/([^/?]+)(\?.*)?", self.path)
                if m and m.group(2) == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                            ]
                        },
                    )
                if m and m.group(2) == "commit":
                    repo = m.group(1)
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    header = next(x["value"] for x in lines if x["key"] == "header")
                    for item in lines:
                        if item["key"] == "file":
                            content = base64.b64decode(item["value"]["content"])
                            stub.repos.setdefault(repo, {})[item["value"]["path"]] = content
                    stub.commits.append({"repo": repo, "summary": header.get("summary")})
                    oid = hashlib.sha1(body).hexdigest()
                    return self._reply(200, {"commitUrl": f"{stub.endpoint}/{repo}/commit/{oid}", "commitOid": oid})
                return self._reply(404, {"error": f"not in the stub: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    @contextmanager
    def running(self) -> Iterator[HubStub]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
