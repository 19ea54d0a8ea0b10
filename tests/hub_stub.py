"""A loopback stand-in for the Hub API endpoints that uploads and downloads use, so Hub tests run offline.

It answers repo creation, branches, pre-upload (every file "regular", i.e. inlined in the commit),
commits, repo info (``/api/models/{repo}[/revision/{rev}]``), tree listings and file resolution (HEAD and
GET with the ``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers ``hf_hub_download`` reads). What
was pushed is kept per repo and branch, so tests assert on exactly the files that reached the "Hub" and
download them back with the real client.

Failures are injected per endpoint kind (``fail``: kind -> HTTP status, or ``"drop"`` to close the
connection without an answer), and ``token`` makes every request without that bearer token a 401.
Imports only the standard library: ``tests/conftest.py`` creates it before ``huggingface_hub`` is imported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

KINDS = ("create", "branch", "preupload", "commit", "info", "tree", "resolve", "validate")


class HubStub:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every repo, commit, request and injected failure (between tests)."""
        self.branches: dict[str, dict[str, dict[str, bytes]]] = {}
        self.heads: dict[str, dict[str, str]] = {}
        self.private: dict[str, bool] = {}
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail: dict[str, int | str] = {}
        self.token: str | None = None

    @property
    def repos(self) -> dict[str, dict[str, bytes]]:
        """The files of every repo's main branch."""
        return {repo: branches.get("main", {}) for repo, branches in self.branches.items()}

    def start(self) -> HubStub:
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()


def _handler(stub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        # ----------------------------------------------------------------- replies
        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, status: int, payload: Any, error_code: str | None = None) -> None:
            headers = {"Content-Type": "application/json"}
            if error_code:
                headers["X-Error-Code"] = error_code
            self._send(status, json.dumps(payload).encode(), headers, body=self.command != "HEAD")

        def _gate(self, kind: str) -> bool:
            """Record the request; answer it with an injected failure or a 401. True when it was answered."""
            stub.requests.append((self.command, self.path))
            if stub.token is not None and self.headers.get("Authorization") != f"Bearer {stub.token}":
                self._json(401, {"error": "Invalid credentials in Authorization header"})
                return True
            failure = stub.fail.get(kind, stub.fail.get("*"))
            if failure == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return True
            if isinstance(failure, int):
                self._json(failure, {"error": f"injected failure of {kind}"})
                return True
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        # ----------------------------------------------------------------- routes
        def do_POST(self) -> None:
            body = self._body()
            path = urlsplit(self.path).path
            if path == "/api/repos/create":
                if self._gate("create"):
                    return
                req = json.loads(body)
                repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                with stub._lock:
                    if repo in stub.branches:
                        return self._json(409, {"error": "You already created this model repo", "url": repo})
                    stub.branches[repo] = {"main": {}}
                    stub.heads[repo] = {"main": _oid(repo.encode())}
                    stub.private[repo] = bool(req.get("private")) or req.get("visibility") == "private"
                return self._json(200, {"url": f"{stub.endpoint}/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                if self._gate("validate"):
                    return
                return self._json(200, {})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
            if not m:
                stub.requests.append((self.command, self.path))
                return self._json(404, {"error": f"not in the stub: {self.path}"})
            repo, action, rev = m.group(1), m.group(2), unquote(m.group(3))
            if self._gate(action):
                return
            if repo not in stub.branches:
                return self._json(404, {"error": "Repository not found"}, "RepoNotFound")
            if action == "branch":
                with stub._lock:
                    stub.branches[repo].setdefault(rev, dict(stub.branches[repo]["main"]))
                    stub.heads[repo].setdefault(rev, stub.heads[repo]["main"])
                return self._json(200, {})
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    200,
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                )
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            branch = rev.removeprefix("refs/heads/")
            with stub._lock:
                files = dict(stub.branches[repo].get(branch, stub.branches[repo]["main"]))
                for item in lines:
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(item["value"]["path"], None)
                oid = _oid(body)
                stub.branches[repo][branch] = files  # a commit lands whole or not at all
                stub.heads[repo][branch] = oid
                stub.commits.append({"repo": repo, "summary": header.get("summary"), "revision": branch})
            return self._json(200, {"commitUrl": f"{stub.endpoint}/{repo}/commit/{oid}", "commitOid": oid})

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if m:
                found = self._gated_files("info", m.group(1), unquote(m.group(2) or "main"))
                if found is None:
                    return
                repo, _rev, files, sha = found
                return self._json(
                    200,
                    {
                        "id": repo,
                        "modelId": repo,
                        "sha": sha,
                        "private": stub.private.get(repo, False),
                        "tags": [],
                        "siblings": [{"rfilename": p} for p in sorted(files)],
                    },
                )
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
            if m:
                found = self._gated_files("tree", m.group(1), unquote(m.group(2)))
                if found is None:
                    return
                prefix = (m.group(3) or "").strip("/")
                files = found[2]
                entries = [
                    {"type": "file", "path": p, "size": len(c), "oid": _oid(c)}
                    for p, c in sorted(files.items())
                    if not prefix or p.startswith(prefix + "/")
                ]
                return self._json(200, entries)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                found = self._gated_files("resolve", m.group(1), unquote(m.group(2)))
                if found is None:
                    return
                name = unquote(m.group(3))
                content = found[2].get(name)
                if content is None:
                    return self._json(404, {"error": f"Entry not found: {name}"}, "EntryNotFound")
                headers = {
                    "Content-Type": "application/octet-stream",
                    "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                    "X-Repo-Commit": found[3],
                }
                return self._send(200, content, headers, body=self.command == "GET")
            stub.requests.append((self.command, self.path))
            return self._json(404, {"error": f"not in the stub: {self.path}"})

        def _gated_files(self, kind: str, repo: str, rev: str) -> tuple[str, str, dict[str, bytes], str] | None:
            """A read request's files at a revision, or None once it was answered (failure, 401 or 404)."""
            return None if self._gate(kind) else self._files(repo, rev)

        def _files(self, repo: str, rev: str) -> tuple[str, str, dict[str, bytes], str] | None:
            if repo not in stub.branches:
                self._json(404, {"error": "Repository not found"}, "RepoNotFound")
                return None
            branch = rev.removeprefix("refs/heads/")
            if branch in stub.branches[repo]:
                return repo, branch, stub.branches[repo][branch], stub.heads[repo][branch]
            for name, head in stub.heads[repo].items():  # a commit sha
                if head == rev:
                    return repo, name, stub.branches[repo][name], head
            self._json(404, {"error": f"Invalid rev id: {rev}"}, "RevisionNotFound")
            return None

    return Handler


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
