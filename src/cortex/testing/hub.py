"""A stand-in for the Hugging Face hub: the endpoints `huggingface_hub` downloads through.

Tests point `HF_ENDPOINT` (or the `endpoint=` argument) at `StandInHub.url` and use the real
client library. What it answers, as huggingface_hub 2.x calls it:

- `GET /api/models/{org}/{name}[/revision/{rev}]` (`HfApi.model_info`, `repo_info`): the repo
  with its commit `sha`, `gated`, and `siblings` (sizes, blob ids, LFS sha256 with `?blobs=1`);
- `GET /api/models/{org}/{name}/tree/{rev}[/{path}]` (`list_repo_tree`, `snapshot_download`);
- `HEAD`/`GET /{org}/{name}/resolve/{rev}/{file}` (`hf_hub_download`): `ETag`,
  `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`; a `Range` gets 206 and `Content-Range`;
- 401 `X-Error-Code: GatedRepo` for a gated repo's files without its token, 404 `RepoNotFound`
  / `EntryNotFound` / `RevisionNotFound` for what does not exist.

Faults for resume tests: `drop_after_bytes` cuts the connection of the first download of each
file after that many bytes (the client must resume with a Range request).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["HubRepo", "StandInHub"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_CHUNK = 64 * 1024


@dataclass
class HubRepo:
    """One model repo of the stand-in hub: its files at one commit.

    Args:
        repo_id: `ORG/NAME`.
        files: file name -> content.
        gated: files need `Authorization: Bearer <token>` with one of the hub's tokens.
    """

    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.sha = digest.hexdigest()

    def etag(self, name: str) -> str:
        """The file's ETag: its sha256, as the hub gives for LFS files."""
        return hashlib.sha256(self.files[name]).hexdigest()

    def sibling(self, name: str) -> dict[str, Any]:
        """The file as `siblings` lists it with `blobs=True`."""
        content = self.files[name]
        return {
            "rfilename": name,
            "size": len(content),
            "blobId": hashlib.sha1(content).hexdigest(),
            "lfs": {"size": len(content), "sha256": self.etag(name), "pointerSize": 134},
        }


class StandInHub:
    """The hub app and, once started, its server on a free port of 127.0.0.1.

    Args:
        tokens: tokens that open gated repos.
        drop_after_bytes: cut the first download of each file after this many bytes.
        chunk_delay_s: pause before each 64 KB of a file (a slow hub, for pulls one can watch).

    Use as a context manager (`with StandInHub() as hub: hub.url`), add repos with `add`.
    `requests` records `(method, path, range)` of every file request, for assertions.
    """

    def __init__(
        self,
        *,
        tokens: tuple[str, ...] = ("hf_good_token",),
        drop_after_bytes: int | None = None,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.tokens = tokens
        self.drop_after_bytes = drop_after_bytes
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[tuple[str, str, str | None]] = []
        self._dropped: set[str] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/api/models/{org}/{name}", self._info, methods=["GET"]),
                Route("/api/models/{org}/{name}/revision/{rev}", self._info, methods=["GET"]),
                Route("/api/models/{org}/{name}/tree/{rev}", self._tree, methods=["GET"]),
                Route("/api/models/{org}/{name}/tree/{rev}/{path:path}", self._tree),
                Route(
                    "/{org}/{name}/resolve/{rev}/{path:path}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
            ]
        )

    def add(self, repo_id: str, files: Mapping[str, bytes], *, gated: bool = False) -> HubRepo:
        """Publish a repo (replacing one of the same id: a new commit)."""
        repo = HubRepo(repo_id, dict(files), gated=gated)
        self.repos[repo_id] = repo
        return repo

    # --- routes -------------------------------------------------------------------------------

    def _repo(self, request: Request) -> HubRepo | Response:
        repo_id = f"{request.path_params['org']}/{request.path_params['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository Not Found: {repo_id}")
        rev = request.path_params.get("rev", "main")
        if rev not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self.tokens

    async def _info(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
        siblings = [
            repo.sibling(name) if blobs else {"rfilename": name} for name in sorted(repo.files)
        ]
        return JSONResponse(
            {
                "_id": repo.sha[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": "auto" if repo.gated else False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
            }
        )

    async def _tree(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        prefix = request.path_params.get("path", "").strip("/")
        entries = [
            {
                "type": "file",
                "oid": repo.sibling(name)["blobId"],
                "size": len(content),
                "path": name,
                "lfs": {"oid": repo.etag(name), "size": len(content), "pointerSize": 134},
            }
            for name, content in sorted(repo.files.items())
            if not prefix or name.startswith(prefix + "/")
        ]
        return JSONResponse(entries)

    async def _resolve(self, request: Request) -> Response:
        repo = self._repo(request)
        path = request.path_params["path"]
        self.requests.append((request.method, path, request.headers.get("range")))
        if isinstance(repo, Response):
            return repo
        if repo.gated and not self._authorized(request):
            return _error(
                401, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are "
                "not in the authorized list."
            )  # fmt: skip
        content = repo.files.get(path)
        if content is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on main")
        headers = {
            "etag": f'"{repo.etag(path)}"',
            "x-repo-commit": repo.sha,
            "accept-ranges": "bytes",
            "content-type": "application/octet-stream",
        }
        start, end = 0, len(content)
        status = 200
        match = _RANGE.match(request.headers.get("range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(content)
            if start >= len(content):
                return Response(status_code=416, headers={"content-range": f"*/{len(content)}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{len(content)}"
        headers["content-length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        body = content[start:end]
        drop = None
        key = f"{repo.repo_id}/{path}"
        if self.drop_after_bytes is not None and key not in self._dropped:
            self._dropped.add(key)
            drop = self.drop_after_bytes
        chunks = _chunks(body, drop, self.chunk_delay_s)
        return StreamingResponse(chunks, status_code=status, headers=headers)

    # --- server -------------------------------------------------------------------------------

    def start(self) -> StandInHub:
        """Serve on a free port of 127.0.0.1 in a background thread; returns once listening."""
        import uvicorn

        from cortex.testing.processes import free_port

        port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in hub did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None

    def __enter__(self) -> StandInHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _chunks(body: bytes, drop_after: int | None, delay_s: float) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), _CHUNK):
        if delay_s:
            await asyncio.sleep(delay_s)
        chunk = body[offset : offset + _CHUNK]
        if drop_after is not None and offset + len(chunk) > drop_after:
            yield chunk[: max(0, drop_after - offset)]
            # Leaving the stream with an error makes the server abort the connection mid-body.
            raise ConnectionAbortedError("stand-in hub: connection dropped on purpose")
        yield chunk


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": message},
        status_code=status,
        headers={"x-error-code": code, "x-error-message": message},
    )
