"""Streamed HTTP(S) download with a progress bar, retries with backoff and resume.

The bytes go to `<dest>.partial` and are renamed to `dest` only when complete. A partial file left
by an interrupted run is resumed with a `Range` request when the server supports it (and, through
`If-Range`, only if the remote file has not changed since); otherwise the download starts over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# Small enough that a stalled read loses little: a timed-out read drops its unfinished chunk.
CHUNK_BYTES = 1 << 16
# Server-side trouble worth another try; other 4xx answers will not change on retry.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
OFFLINE_HINT = (
    "if this machine cannot reach it, download the tarball elsewhere and pass its path "
    "(or file:///path) instead"
)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 1.0  # doubled after each failed attempt
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0  # connect timeout and longest silence while reading

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


class _Retryable(Exception):
    """A failure that another attempt (resuming what we have) may fix."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def download(
    url: str,
    dest: Path,
    *,
    policy: RetryPolicy | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Download `url` to `dest` (resuming `dest.partial` when present) and return `dest`."""
    policy = policy or RetryPolicy()
    dest.parent.mkdir(parents=True, exist_ok=True)
    own_session = session is None
    session = session or requests.Session()
    last_error: _Retryable | None = None
    try:
        for attempt in range(1, policy.attempts + 1):
            if last_error is not None:
                delay = policy.delay(attempt - 1)
                log.warning(
                    "%s: %s; retrying in %.1fs (attempt %d/%d)",
                    url,
                    last_error,
                    delay,
                    attempt,
                    policy.attempts,
                )
                time.sleep(delay)
            try:
                _attempt(url, dest, session, policy)
            except _Retryable as error:
                last_error = error
                continue
            return dest
    finally:
        if own_session:
            session.close()
    partial = partial_path(dest)
    kept = (
        f"; {partial.stat().st_size} bytes kept in {partial}, rerun to resume"
        if partial.exists() and partial.stat().st_size
        else ""
    )
    raise PipelineError(
        f"{url}: download failed after {policy.attempts} attempts ({last_error}){kept}; "
        f"check the URL and the network; {OFFLINE_HINT}"
    )


def _attempt(url: str, dest: Path, session: requests.Session, policy: RetryPolicy) -> None:
    partial = partial_path(dest)
    validator_file = partial.with_name(partial.name + ".json")
    offset = partial.stat().st_size if partial.exists() else 0
    # Ask for the raw bytes: a server that gzips a .tar.gz on the fly would break sizes and hashes.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = _read_validator(validator_file)
        if validator:
            headers["If-Range"] = validator
    try:
        with session.get(
            url, headers=headers, stream=True, timeout=policy.timeout_s, allow_redirects=True
        ) as response:
            status = response.status_code
            if status == 416 and offset:
                total = _total_from_content_range(response.headers.get("Content-Range", ""))
                if total == offset:
                    _finish(partial, validator_file, dest)
                    return
                _discard(partial, validator_file)
                raise _Retryable("the partial download does not match the remote file")
            if status in RETRY_STATUS:
                raise _Retryable(f"HTTP {status} {response.reason}")
            if status not in (200, 206):
                raise PipelineError(
                    f"{url}: HTTP {status} {response.reason}; check the URL (see conf/zoo/ for "
                    f"the known zoo models); {OFFLINE_HINT}"
                )
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range", ""))
                if start != offset:
                    _discard(partial, validator_file)
                    raise _Retryable(f"server resumed at byte {start}, not {offset}")
                mode = "ab"
            else:
                # The server ignored Range (or the file changed): start over.
                offset = 0
                mode = "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                _write_validator(validator_file, response.headers)
            _stream_body(response, partial, mode, offset, total, dest.name)
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as error:
        raise _Retryable(_reason(error)) from error
    except requests.RequestException as error:
        raise PipelineError(f"{url}: {_reason(error)}; check the URL") from error
    size = partial.stat().st_size
    if total is not None and size != total:
        if size > total:
            _discard(partial, validator_file)
        raise _Retryable(f"connection closed after {size} of {total} bytes")
    _finish(partial, validator_file, dest)


def _stream_body(
    response: requests.Response, partial: Path, mode: str, offset: int, total: int | None, name: str
) -> None:
    with (
        open(partial, mode) as handle,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=None,  # a bar on terminals, nothing in logs
            leave=False,
        ) as bar,
    ):
        # decode_content=False: write exactly the bytes the server sent.
        for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
            handle.write(chunk)
            bar.update(len(chunk))


def _finish(partial: Path, validator_file: Path, dest: Path) -> None:
    os.replace(partial, dest)
    validator_file.unlink(missing_ok=True)


def _discard(partial: Path, validator_file: Path) -> None:
    partial.unlink(missing_ok=True)
    validator_file.unlink(missing_ok=True)


def _write_validator(path: Path, headers: requests.structures.CaseInsensitiveDict) -> None:
    # A strong ETag or Last-Modified lets a later resume say "only if unchanged" (If-Range).
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if validator:
        path.write_text(json.dumps({"validator": validator}))
    else:
        path.unlink(missing_ok=True)


def _read_validator(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["validator"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _parse_content_range(value: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(value.strip())
    if not match:
        raise _Retryable(f"partial response without a usable Content-Range ({value!r})")
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)


def _total_from_content_range(value: str) -> int | None:
    match = re.match(r"bytes\s+\*/(\d+)", value.strip())
    return int(match.group(1)) if match else None


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _reason(error: BaseException) -> str:
    """A short cause ("[Errno 111] Connection refused") instead of urllib3's nested repr."""
    if isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError):
        return "timed out"
    text = str(error)
    match = _ERRNO.search(text)
    if match:
        return match.group(0).strip()
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection closed before the end of the file"
    return text.splitlines()[0][:200] if text else type(error).__name__
