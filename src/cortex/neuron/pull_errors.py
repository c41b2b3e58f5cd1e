"""What `huggingface_hub` raises, as the cortex errors a client can act on (see `pull`).

`hub_errors(...)` is a context manager around the client library's calls: the hub's 401/403
(gated) become 502 `hub_gated` saying what to do with `HF_TOKEN`, a missing repo, revision or
file 404 `model_not_found`, `HF_HUB_OFFLINE` 409 `hub_offline`, ENOSPC `DiskFullError`, the
rest of its network and HTTP errors 502 `hub_unreachable`.
"""

from __future__ import annotations

import errno
from typing import Any

from cortex.errors import ConflictError, CortexError, ModelNotFoundError, UpstreamError

__all__ = ["DiskFullError", "hub_errors"]


class DiskFullError(CortexError):
    """The disk cannot hold the pull (500, code `disk_full`: the node's trouble, not memory)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="disk_full")


class hub_errors:
    """Translate what the client library raises inside the block.

    Args:
        what: the pull in words (`ORG/NAME:QUANT`).
        repo: `ORG/NAME`.
        revision: the revision asked for, if any.
        token: the token given (None: `HF_TOKEN` or the saved login; False: none).
        endpoint: the hub (None: `HF_ENDPOINT`).
    """

    def __init__(
        self,
        what: str,
        repo: str,
        revision: str | None,
        token: str | bool | None,
        endpoint: str | None,
    ) -> None:
        self.what, self.repo, self.revision = what, repo, revision
        self.token, self.endpoint = token, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, CortexError):
            return
        error = self._translate(exc)
        if error is not None:
            raise error from exc

    def _translate(self, exc: BaseException) -> CortexError | None:
        from huggingface_hub import constants, errors

        where = self.endpoint or constants.ENDPOINT
        ref, repo = self.what, self.repo
        if isinstance(exc, errors.OfflineModeIsEnabled):  # the node's setting, not a failure
            return ConflictError(
                f"cannot pull {ref}: this node runs with HF_HUB_OFFLINE set; unset it to pull",
                code="hub_offline",
            )
        if isinstance(exc, errors.GatedRepoError) or (
            isinstance(exc, errors.HfHubHTTPError)
            and exc.response is not None
            and exc.response.status_code in (401, 403)
        ):
            has_token = isinstance(self.token, str) or (
                self.token is None and _saved_token() is not None
            )
            advice = (
                "the token given (HF_TOKEN or the saved login) has no access to it; accept "
                "its terms on the hub with that account"
                if has_token
                else "set HF_TOKEN to a token of an account that accepted its terms"
            )
            return UpstreamError(f"{repo} is gated on {where}: {advice}", code="hub_gated")
        if isinstance(exc, errors.RepositoryNotFoundError):
            return ModelNotFoundError(f"there is no model {repo} on {where}")
        if isinstance(exc, errors.RevisionNotFoundError):
            return ModelNotFoundError(f"{repo} has no revision {self.revision!r} on {where}")
        if isinstance(exc, errors.RemoteEntryNotFoundError):
            return ModelNotFoundError(f"a file of {repo} is missing on {where}: {exc}")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return DiskFullError(
                f"the disk filled up while pulling {ref}: free some space and pull again "
                "(the download resumes where it stopped)"
            )
        if isinstance(exc, errors.HfHubHTTPError | errors.LocalEntryNotFoundError | OSError):
            return UpstreamError(
                f"pulling {ref} from {where} failed: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}",
                code="hub_unreachable",
            )
        name = type(exc).__module__
        if name.startswith(("httpx", "httpcore")):  # the client's transport errors
            return UpstreamError(
                f"cannot reach the hub at {where} to pull {ref}: {type(exc).__name__}: {exc}",
                code="hub_unreachable",
            )
        return None


def _saved_token() -> str | None:
    from huggingface_hub import get_token

    token: str | None = get_token()
    return token
