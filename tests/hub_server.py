"""A small local stand-in of the Hugging Face Hub HTTP API, for end-to-end tests with the real client.

It speaks just enough of the Hub's protocol for ``huggingface_hub`` (2.x) to create repos, upload folders,
list trees and download files: users with read/write tokens, public and private model repos, dataset repos
(``repo_type="dataset"``) and Space repos (``repo_type="space"``, with their SDK and requested hardware), commits and branches, all in memory. Every
file is uploaded as a "regular" git blob (base64 inside the NDJSON commit body), so no LFS/Xet transfer ever
happens. Errors carry the ``X-Error-Code`` header the client maps to its
exception types, and the server never answers 5xx (the client would retry with back-off): an unexpected
failure becomes a 400 and is recorded in ``FakeHub.errors`` so a test can assert there were none.

    with FakeHub() as hub:
        token = hub.add_user("alice")
        HfApi(endpoint=hub.url, token=token).create_repo("alice/demo")
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

EMPTY_AGENT_REGISTRY = {"standardEnvVars": [], "harnesses": {}}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class User:
    name: str
    token: str
    role: str = "write"  # "read" or "write", like a classic Hub access token
    orgs: tuple[str, ...] = ()

    def can_write(self, namespace: str) -> bool:
        return self.role == "write" and namespace in (self.name, *self.orgs)


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]  # the full tree at this commit
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_id: str
    private: bool
    kind: str = "model"  # "model", "dataset" or "space"
    sdk: str | None = None  # spaces: gradio, docker or static
    hardware: str | None = None  # spaces: the hardware last requested
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid
    created_at: str = field(default_factory=_now)
    # What the tree listing claims, path -> size, over every commit: a size for a stored file (a listing that
    # understates it) or a file that is only listed (a huge fake repo that costs nothing to serve).
    listed: dict[str, int] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit oid, like the Hub (no abbreviated hashes)."""
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def add_commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        commit = Commit(oid=secrets.token_hex(20), parent=parent, message=message, files=files)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class HubHTTPError(Exception):
    """Raised inside a handler to answer with an error status, message and optional X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class RequestRecord:
    method: str
    path: str  # path and query as sent
    authorized: bool  # an Authorization header was present
    status: int = 0


class FakeHub:
    """In-memory Hub: start() serves it on 127.0.0.1 at a free port; url is the endpoint to give clients."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}  # token -> user
        self.repos: dict[str, Repo] = {}  # model repos
        self.spaces: dict[str, Repo] = {}  # Space repos (a model and a Space may share an id, as on the Hub)
        self.datasets: dict[str, Repo] = {}  # dataset repos (likewise their own namespace)
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []  # unexpected handler failures (answered with 400, never 5xx)
        # Misbehaviours a test can switch on: a server that echoes the caller's credentials in its error
        # messages (the client must scrub them), and one that refuses every commit with this message (422).
        self.echo_credentials_in_errors = False
        self.reject_commits: str | None = None
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeHub":
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ test helpers

    def add_user(self, name: str, *, role: str = "write", orgs: tuple[str, ...] = ()) -> str:
        """Register a user and return a fresh access token for them."""
        token = "hf_" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
        with self.lock:
            self.users[token] = User(name=name, token=token, role=role, orgs=tuple(orgs))
        return token

    def create_repo(self, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None,
                    kind: str = "model", sdk: str | None = None, hardware: str | None = None,
                    listed: dict[str, int] | None = None) -> Repo:
        """Create a repo directly (e.g. a repo that is not a pokedemo model); ``listed``: see ``Repo.listed``."""
        with self.lock:
            repo = Repo(repo_id=repo_id, private=private, kind=kind, sdk=sdk, hardware=hardware,
                        listed=dict(listed or {}))
            repo.add_commit("main", "initial commit", {".gitattributes": b"*.safetensors filter=lfs diff=lfs\n"})
            if files:
                repo.add_commit("main", "add files", {**repo.resolve("main").files, **files})
            self.store(kind)[repo_id] = repo
            return repo

    def store(self, kind: str) -> dict[str, Repo]:
        return {"space": self.spaces, "dataset": self.datasets}.get(kind, self.repos)

    def file(self, repo_id: str, path: str, revision: str = "main", kind: str = "model") -> bytes:
        commit = self.store(kind)[repo_id].resolve(revision)
        assert commit is not None, f"no revision {revision} in {repo_id}"
        return commit.files[path]

    def head(self, repo_id: str, branch: str = "main", kind: str = "model") -> str:
        return self.store(kind)[repo_id].branches[branch]


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the bound subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a Content-Length

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        record = RequestRecord(method, self.path, authorized="authorization" in {k.lower() for k in self.headers})
        with self.hub.lock:
            self.hub.requests.append(record)
        body = self._read_body()
        try:
            status, headers, payload = self._route(method, body)
        except HubHTTPError as err:
            status, headers, payload = self._error(err)
        except Exception as err:  # noqa: BLE001 - never 5xx: the client would retry with back-off
            with self.hub.lock:
                self.hub.errors.append(f"{method} {self.path}: {type(err).__name__}: {err}")
            status, headers, payload = self._error(HubHTTPError(400, f"stand-in failure: {err}"))
        record.status = status
        self._send(method, status, headers, payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, method: str, status: int, headers: dict[str, str], payload: Any) -> None:
        if isinstance(payload, (bytes, bytearray)):
            data = bytes(payload)
        else:
            data = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _error(self, err: HubHTTPError) -> tuple[int, dict[str, str], Any]:
        if self.hub.echo_credentials_in_errors:
            err.message += f" (request sent Authorization: {self.headers.get('Authorization')})"
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        return err.status, headers, {"error": err.message}

    # ------------------------------------------------------------------ auth

    def _user(self) -> User | None:
        """The caller, None when anonymous; an unknown token is refused outright, as on the Hub."""
        header = self.headers.get("Authorization") or ""
        if not header:
            return None
        token = header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else ""
        with self.hub.lock:
            user = self.hub.users.get(token)
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _readable_repo(self, repo_id: str, kind: str = "model") -> Repo:
        user = self._user()
        repo = self.hub.store(kind).get(repo_id)
        if repo is not None and repo.private and (user is None or repo.namespace not in (user.name, *user.orgs)):
            repo = None  # private repos are invisible to others, exactly like missing ones
        if repo is None:
            status = 401 if user is None else 404
            raise HubHTTPError(status, "Repository not found", code="RepoNotFound")
        return repo

    def _writable_repo(self, repo_id: str, kind: str = "model") -> tuple[Repo, User]:
        repo = self._readable_repo(repo_id, kind)
        user = self._user()
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to write to this repository")
        if not user.can_write(repo.namespace):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo, user

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        split = urlsplit(self.path)
        raw = [part for part in split.path.split("/") if part != ""]
        parts = [unquote(part) for part in raw]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if parts[:1] != ["api"]:
            prefixes = {"spaces": "space", "datasets": "dataset"}
            kind, parts = (prefixes[parts[0]], parts[1:]) if parts[:1] and parts[0] in prefixes else ("model", parts)
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), kind)
            raise HubHTTPError(404, f"no route for {method} {split.path}")
        api = parts[1:]
        if api == ["whoami-v2"] and method == "GET":
            return self._whoami()
        if api == ["agent-harnesses"] or api[:1] == ["telemetry"]:
            return 200, {}, EMPTY_AGENT_REGISTRY
        if api == ["repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if api == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if len(api) >= 3 and api[0] in ("models", "spaces", "datasets"):
            kind = api[0][:-1]
            return self._repo_route(method, kind, f"{api[1]}/{api[2]}", api[3:], query, body)
        raise HubHTTPError(404, f"no route for {method} {split.path}")

    def _repo_route(self, method: str, kind: str, repo_id: str, rest: list[str], query: dict, body: bytes):
        blobs = query.get("blobs", "").lower() == "true"  # files_metadata=True: sizes in the siblings
        if not rest and method == "GET":
            return self._repo_info(repo_id, "main", kind, blobs)
        action, args = rest[0], rest[1:]
        if action == "revision" and args and method == "GET":
            return self._repo_info(repo_id, args[0], kind, blobs)
        if action == "tree" and args and method == "GET":
            recursive = query.get("recursive", "").lower() == "true"
            return self._tree(repo_id, args[0], "/".join(args[1:]), recursive, kind)
        if action == "preupload" and args and method == "POST":
            return self._preupload(repo_id, args[0], json.loads(body or b"{}"), kind)
        if action == "commit" and args and method == "POST":
            return self._commit_route(repo_id, args[0], body, kind)
        if action == "branch" and args and method == "POST":
            return self._create_branch(repo_id, "/".join(args), json.loads(body or b"{}"), kind)
        if kind == "space" and action == "hardware" and not args and method == "POST":
            return self._request_hardware(repo_id, json.loads(body or b"{}"))
        raise HubHTTPError(404, f"no route for {method} /api/{kind}s/{repo_id}/{'/'.join(rest)}")

    # ------------------------------------------------------------------ endpoints

    def _whoami(self):
        user = self._user()
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return 200, {}, {
            "type": "user", "id": hashlib.sha1(user.name.encode()).hexdigest()[:24], "name": user.name,
            "fullname": user.name, "orgs": [{"type": "org", "name": org} for org in user.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "stand-in", "role": user.role}},
        }

    def _create_repo(self, payload: dict):
        user = self._user()
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repository")
        namespace = payload.get("organization") or user.name
        repo_id = f"{namespace}/{payload['name']}"
        kind = payload.get("type") or "model"
        url = f"{self.hub.url}/{_url_prefix(kind)}{repo_id}"
        if kind not in ("model", "space", "dataset"):
            raise HubHTTPError(400, "the stand-in Hub only hosts model, dataset and Space repos")
        if kind == "space" and payload.get("sdk") not in ("gradio", "docker", "static"):
            raise HubHTTPError(400, "a Space needs an sdk: gradio, docker or static")
        if not user.can_write(namespace):
            raise HubHTTPError(403, f"You don't have the rights to create a {kind} under the namespace {namespace}")
        with self.hub.lock:
            if repo_id in self.hub.store(kind):
                return 409, {"X-Error-Message": f"You already created this {kind} repo"}, {
                    "error": f"You already created this {kind} repo", "url": url}
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.hub.create_repo(repo_id, private=private, kind=kind, sdk=payload.get("sdk"),
                                 hardware=payload.get("hardware"))
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def _validate_yaml(self, payload: dict):
        content = payload.get("content") or ""
        if content.startswith("---"):
            front = content.split("---", 2)[1] if content.count("---") >= 2 else ""
            try:
                meta = yaml.safe_load(front)
            except yaml.YAMLError as err:
                return 400, {}, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}
            if meta is not None and not isinstance(meta, dict):
                return 400, {}, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def _repo_info(self, repo_id: str, revision: str, kind: str = "model", blobs: bool = False):
        repo = self._readable_repo(repo_id, kind)
        commit = self._commit(repo, revision)
        files = _listing(repo, commit)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo.namespace, "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [{"rfilename": path, **({"blobId": oid, "size": size} if blobs else {})}
                         for path, (oid, size) in sorted(files.items())],
        }
        if kind == "space":
            info.update(sdk=repo.sdk, runtime=self._runtime(repo))
        return 200, {}, info

    @staticmethod
    def _runtime(repo: Repo) -> dict:
        return {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware}}

    def _request_hardware(self, repo_id: str, payload: dict):
        repo, _ = self._writable_repo(repo_id, "space")
        with self.hub.lock:
            repo.hardware = payload.get("flavor")
        return 200, {}, self._runtime(repo)

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool, kind: str = "model"):
        repo = self._readable_repo(repo_id, kind)
        commit = self._commit(repo, revision)
        base = f"{prefix.rstrip('/')}/" if prefix else ""
        entries: dict[str, dict] = {}
        for path, (oid, size) in sorted(_listing(repo, commit).items()):
            if not path.startswith(base):
                continue
            rel = path[len(base):].split("/")
            if len(rel) > 1:  # the folders on the way (only the first level when not recursive)
                for depth in range(1, len(rel) if recursive else 2):
                    folder = base + "/".join(rel[:depth])
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": git_blob_oid(folder.encode())})
            if recursive or len(rel) == 1:
                entries[path] = {"type": "file", "path": path, "oid": oid, "size": size}
        if prefix and not entries:
            raise HubHTTPError(404, f"{prefix} does not exist at {revision}", code="EntryNotFound")
        return 200, {}, list(entries.values())

    def _preupload(self, repo_id: str, revision: str, payload: dict, kind: str = "model"):
        repo, _ = self._writable_repo(repo_id, kind)
        existing = repo.resolve(revision)
        files = []
        for item in payload.get("files", []):
            known = existing.files.get(item["path"]) if existing else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_oid(known) if known is not None else None})
        return 200, {}, {"files": files, "commitOid": existing.oid if existing else None}

    def _commit_route(self, repo_id: str, revision: str, body: bytes, kind: str = "model"):
        repo, _ = self._writable_repo(repo_id, kind)
        if self.hub.reject_commits:
            raise HubHTTPError(422, self.hub.reject_commits)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        with self.hub.lock:
            if revision not in repo.branches and repo.resolve(revision) is None:
                raise HubHTTPError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
            if revision not in repo.branches:
                raise HubHTTPError(400, "commits go to a branch, not to a commit id")
            parent = header.get("parentCommit")
            if parent is not None and parent != repo.branches[revision]:
                raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.resolve(revision).files)
            for line in lines:
                _apply_operation(files, line)
            commit = repo.add_commit(revision, header.get("summary") or "commit", files)
        prefix = _url_prefix(kind)
        return 200, {}, {"commitUrl": f"{self.hub.url}/{prefix}{repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                         "pullRequestUrl": None, "success": True}

    def _create_branch(self, repo_id: str, branch: str, payload: dict, kind: str = "model"):
        repo, _ = self._writable_repo(repo_id, kind)
        start = self._commit(repo, payload.get("startingPoint") or "main")
        with self.hub.lock:
            if branch in repo.branches:
                raise HubHTTPError(409, f"Reference already exists: {branch}")
            repo.branches[branch] = start.oid
        return 200, {}, {}

    def _resolve(self, repo_id: str, revision: str, path: str, kind: str = "model"):
        commit = self._commit(self._readable_repo(repo_id, kind), revision)
        data = commit.files.get(path)
        if data is None:
            raise HubHTTPError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(data)}"',
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "none"}
        return 200, headers, data


def _listing(repo: Repo, commit: Commit) -> dict[str, tuple[str, int]]:
    """path -> (git oid, size) of a commit as the Hub lists it: the stored files, with ``repo.listed`` over them."""
    files = {path: (git_blob_oid(data), len(data)) for path, data in commit.files.items()}
    for path, size in repo.listed.items():
        files[path] = (files[path][0] if path in files else git_blob_oid(path.encode()), size)
    return files


def _url_prefix(kind: str) -> str:
    """Where a repo's pages live: /NS/NAME for models, /datasets/NS/NAME, /spaces/NS/NAME."""
    return "" if kind == "model" else f"{kind}s/"


def _apply_operation(files: dict[str, bytes], line: dict) -> None:
    key, value = line["key"], line.get("value", {})
    if key == "header":
        return
    if key == "file":
        if value.get("encoding") != "base64":
            raise HubHTTPError(400, "regular files must be base64-encoded")
        files[value["path"]] = base64.b64decode(value["content"])
    elif key == "deletedFile":
        if files.pop(value["path"], None) is None:
            raise HubHTTPError(404, "A file with this name doesn't exist", code="EntryNotFound")
    elif key == "deletedFolder":
        prefix = value["path"].rstrip("/") + "/"
        for path in [p for p in files if p.startswith(prefix)]:
            del files[path]
    else:  # lfsFile and anything else: the stand-in never asked for LFS
        raise HubHTTPError(400, f"unsupported commit operation {key!r} (the stand-in only takes regular files)")
