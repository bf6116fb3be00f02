"""A loopback stand-in for the Hugging Face Hub: just the endpoints an upload uses.

``HfApi.create_repo`` + ``HfApi.upload_folder`` (huggingface_hub 2.4, legacy non-xet path) hit:

* ``POST /api/repos/create``                          create a repo (409 when it exists)
* ``POST /api/{type}s/{repo}/branch/{branch}``        create a branch from ``main``
* ``POST /api/validate-yaml``                          check the README metadata block
* ``POST /api/{type}s/{repo}/preupload/{rev}``        per file: ``regular`` or ``lfs``
* ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` LFS batch API (basic transfer only)
* ``PUT  /lfs-upload/{oid}``                           the LFS object itself (sha256-checked)
* ``POST /lfs-verify/{oid}``                           LFS verify step
* ``POST /api/{type}s/{repo}/commit/{rev}``           NDJSON commit: header, base64 files, LFS pointers

Anything else is answered 404 and recorded in ``unexpected`` so tests can assert that the
client hit nothing we did not mean it to. The server binds 127.0.0.1 only, caps request bodies
(``max_body_bytes``), closes every connection after one response and keeps received files in
memory: ``server.files("dataset", "me/ds")`` -> ``{path: bytes}``.

Use as a context manager::

    with LoopbackHub(token="hf_test_...") as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_test_...")
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$")
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/lfs-(upload|verify)/([0-9a-f]{64})$")


@dataclass
class Repo:
    """One repository: files per branch and the commits received."""

    private: bool = False
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra


class LoopbackHub:
    """The fake Hub: state, HTTP server and its thread.

    ``lfs_threshold`` (bytes) and ``lfs_patterns`` (globs) decide which files preupload marks
    ``lfs``, like the Hub's 10 MB rule and default ``.gitattributes``; the rest are ``regular``.
    """

    def __init__(
        self,
        token: str,
        *,
        lfs_threshold: int = 10 * 1024 * 1024,
        lfs_patterns: tuple[str, ...] = (),
        max_body_bytes: int = 64 * 1024 * 1024,
    ):
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = lfs_patterns
        self.max_body_bytes = max_body_bytes
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.upload_modes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="loopback-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "use LoopbackHub as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ queries for tests
    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a branch, ``{path_in_repo: content}``."""
        return dict(self.repos[(repo_type, repo_id)].branches[revision])

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        return self.repos[(repo_type, repo_id)]

    # ------------------------------------------------------------------ endpoint logic
    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _HTTPError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _branch(self, repo: Repo, revision: str) -> dict[str, bytes]:
        if revision not in repo.branches:
            raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.branches[revision]

    def create_repo(self, body: dict[str, Any]) -> dict[str, Any]:
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES or not body.get("name") or not body.get("organization"):
            raise _HTTPError(400, f"bad create payload {body!r}")
        repo_id = f"{body['organization']}/{body['name']}"
        url = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            raise _HTTPError(409, "You already created this repo", url=url)  # the Hub says where it is
        self.repos[(repo_type, repo_id)] = Repo(private=body.get("visibility") == "private")
        return {"url": url, "name": repo_id, "id": repo_id}

    def create_branch(self, repo_type: str, repo_id: str, branch: str) -> dict[str, Any]:
        repo = self._repo(repo_type, repo_id)
        if branch in repo.branches:
            raise _HTTPError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = dict(repo.branches["main"])
        return {}

    def validate_yaml(self, body: dict[str, Any]) -> dict[str, Any]:
        content = body.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        if match is None:
            return {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            raise _HTTPError(400, f"Invalid YAML: {err}", "BadRequest") from err
        if not isinstance(meta, dict):
            raise _HTTPError(400, "YAML metadata must be a mapping", "BadRequest")
        return {"errors": [], "warnings": []}

    def preupload(self, repo_type: str, repo_id: str, revision: str, body: dict[str, Any]) -> dict[str, Any]:
        self._branch(self._repo(repo_type, repo_id), revision)
        out = []
        for f in body["files"]:
            is_lfs = f["size"] >= self.lfs_threshold or any(
                fnmatch.fnmatch(f["path"], p) for p in self.lfs_patterns
            )
            mode = "lfs" if is_lfs else "regular"
            self.upload_modes[f["path"]] = mode
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return {"files": out, "commitOid": "0" * 40}

    def lfs_batch(self, repo_type: str, repo_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._repo(repo_type, repo_id)
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", []):
            raise _HTTPError(422, f"only basic uploads are served, got {body!r}")
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.endpoint}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, data: bytes) -> dict[str, Any]:
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HTTPError(400, f"sha256 mismatch for LFS object {oid}")
        self.lfs_objects[oid] = data
        return {}

    def lfs_verify(self, oid: str, body: dict[str, Any]) -> dict[str, Any]:
        data = self.lfs_objects.get(oid)
        if data is None or len(data) != body.get("size"):
            raise _HTTPError(404, f"LFS object {oid} missing or of the wrong size")
        return {}

    def commit(self, repo_type: str, repo_id: str, revision: str, ndjson: bytes) -> dict[str, Any]:
        branch = self._branch(self._repo(repo_type, repo_id), revision)
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "commit payload must start with a header line")
        staged, paths = dict(branch), []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, f"unsupported encoding {value.get('encoding')!r}")
                staged[value["path"]] = base64.b64decode(value["content"], validate=True)
            elif key == "lfsFile":
                data = self.lfs_objects.get(value["oid"])
                if data is None or len(data) != value.get("size", len(data)):
                    raise _HTTPError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                staged[value["path"]] = data
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            else:
                raise _HTTPError(400, f"unsupported commit operation {key!r}")
            paths.append(value["path"])
        oid = hashlib.sha1(ndjson).hexdigest()
        branch.clear()
        branch.update(staged)
        self.repos[(repo_type, repo_id)].commits.append(
            {"revision": revision, "summary": lines[0]["value"]["summary"], "paths": paths, "oid": oid}
        )
        url = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}/commit/{oid}"
        return {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None}


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to :class:`LoopbackHub`; one request per connection."""

    state: LoopbackHub
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a client may stall mid-request

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        limit = self.state.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > limit:
                    raise _HTTPError(413, f"request body over {limit} bytes")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise _HTTPError(413, f"request body over {limit} bytes")
        return self.rfile.read(length)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        self.state.authorizations.append(header)
        return header == f"Bearer {self.state.token}"

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        hub = self.state
        try:
            body = self._read_body()
            with hub._lock:
                hub.requests.append((method, path))
                result = self._route(method, path, body)
            self._send(200, result)
        except _HTTPError as err:
            self._send(err.status, {"error": err.message, **err.extra}, err.error_code)
        except (KeyError, ValueError, TypeError) as err:
            self._send(400, {"error": f"malformed request: {err!r}"})

    def _route(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        hub = self.state
        obj = _LFS_OBJECT.match(path)
        if method == "PUT" and obj and obj.group(1) == "upload":
            return hub.lfs_put(obj.group(2), body)  # a presigned URL in real life: no Hub token
        if not self._authorized():
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        if method == "POST" and path == "/api/repos/create":
            return hub.create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return hub.validate_yaml(json.loads(body))
        if method == "POST" and obj and obj.group(1) == "verify":
            return hub.lfs_verify(obj.group(2), json.loads(body))
        match = _API_REPO.match(path)
        if method == "POST" and match:
            repo_type, repo_id, action = match.group(1)[:-1], match.group(2), match.group(3)
            revision = unquote(match.group(4))
            if action == "preupload":
                return hub.preupload(repo_type, repo_id, revision, json.loads(body))
            if action == "commit":
                return hub.commit(repo_type, repo_id, revision, body)
            return hub.create_branch(repo_type, repo_id, revision)
        batch = _LFS_BATCH.match(path)
        if method == "POST" and batch:
            repo_type = (batch.group(1) or "models")[:-1]
            return hub.lfs_batch(repo_type, batch.group(2), json.loads(body))
        hub.unexpected.append((method, path))
        raise _HTTPError(404, f"the loopback hub does not serve {method} {path}")

    def _send(self, status: int, payload: dict[str, Any], error_code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True
