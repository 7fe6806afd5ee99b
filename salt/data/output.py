"""Where a job's files end up: a local folder, or a prefix in an object store (`s3://BUCKET/PREFIX`).

A job always writes into a local folder (`JobOutput.local`): the output folder itself, or, for an object
store, a staging folder on this machine. A file counts as written once `publish(name)` has put it in
place; for an object store that is an upload, and the jobs publish in the order readers rely on (a shard's
index and tar, then its journal record; the manifest last). An object store shows an object only when its
upload has completed (a single PUT, or a multipart upload once completed: s3fs completes it last and aborts
it on an error), so no reader ever sees half a file. A job killed during an upload leaves at most an
unfinished multipart upload, invisible to readers, which the next run aborts (`abort_unfinished`).
Published files leave the staging folder (`drop_local`), so a job needs local disk for the files it is
writing, not for the whole output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from salt.data.storage import is_url

WRITABLE_URLS = ("s3",)  # object stores a job writes to (tested on a local S3-compatible server)


class OutputError(ValueError):
    """An output the job cannot honour; the message says what it can do instead."""


def default_staging() -> Path:
    return Path(os.environ.get("SALT_STAGING", Path.home() / ".cache" / "salt" / "staging"))


def open_output(out: str | Path | JobOutput, staging: str | Path | None = None) -> JobOutput:
    """out: a folder, s3://BUCKET/PREFIX, or an output already opened (returned as it is). staging: where
    files of an object-store output are made before their upload (default ~/.cache/salt/staging, or
    $SALT_STAGING), one folder per output URL."""
    if isinstance(out, (LocalOutput, RemoteOutput)):
        return out
    if not is_url(out):
        return LocalOutput(Path(out))
    scheme = str(out).split("://", 1)[0].lower()
    if scheme == "file":
        return LocalOutput(Path(str(out).split("://", 1)[1]))
    if scheme not in WRITABLE_URLS:
        raise OutputError(f"cannot write to {out}: jobs write to a folder or to {', '.join(s + '://' for s in WRITABLE_URLS)}"
                          " (other URLs are read-only here)")
    return RemoteOutput(str(out), Path(staging) if staging else default_staging())


class LocalOutput:
    """A folder: files are in place when written (each job renames its files into place itself)."""

    def __init__(self, folder: Path):
        self.local = folder
        self.name = folder.name

    def __str__(self) -> str:
        return str(self.local)

    def prepare(self) -> None:
        self.local.mkdir(parents=True, exist_ok=True)

    def publish(self, *names: str) -> None:
        pass

    def drop_local(self, *names: str) -> None:
        pass

    def size(self, name: str) -> int | None:
        path = self.local / name
        return path.stat().st_size if path.exists() else None

    def read_text(self, name: str) -> str | None:
        path = self.local / name
        return path.read_text() if path.exists() else None

    def glob(self, pattern: str) -> list[str]:
        return sorted(str(p.relative_to(self.local)) for p in self.local.glob(pattern))

    def remove(self, *names: str) -> None:
        for name in names:
            path = self.local / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def pull(self, folder: str) -> None:
        pass

    def abort_unfinished(self) -> int:
        return 0


class RemoteOutput:
    """A prefix in an object store, through fsspec (s3fs): made in `local`, published by upload."""

    def __init__(self, url: str, staging_root: Path):
        try:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise OutputError(f"{url}: {e} (pip install -e '.[remote]' brings s3fs)") from None
        self.url = url.rstrip("/")
        self.name = self.url.rsplit("/", 1)[-1]
        self.path = self.path.rstrip("/")
        self.local = staging_root / f"{self.name}-{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"
        self._sizes: dict[str, int] | None = None  # one listing of the prefix, kept up to date by publish

    def __str__(self) -> str:
        return self.url

    def _key(self, name: str) -> str:
        return f"{self.path}/{name}"

    def prepare(self) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        bucket = self.path.split("/", 1)[0]
        try:
            if not self.fs.exists(bucket):
                raise OutputError(f"cannot write to {self.url}: bucket {bucket} does not exist (or is not visible "
                                  "with these credentials)")
        except PermissionError as e:
            raise OutputError(f"cannot write to {self.url}: {e}") from None

    def publish(self, *names: str) -> None:
        """Uploads each file from the staging folder, in the order given (each visible once complete)."""
        for name in names:
            self.fs.put_file(str(self.local / name), self._key(name))
            if self._sizes is not None:
                self._sizes[name] = (self.local / name).stat().st_size

    def drop_local(self, *names: str) -> None:
        for name in names:
            (self.local / name).unlink(missing_ok=True)

    def size(self, name: str) -> int | None:
        """The object's size (None: no such object), from one listing of the prefix per run."""
        if self._sizes is None:
            self.fs.invalidate_cache(self.path)
            try:
                found = self.fs.find(self.path, detail=True)
            except FileNotFoundError:
                found = {}
            self._sizes = {k[len(self.path) + 1:]: int(v["size"]) for k, v in found.items()}
        return self._sizes.get(name)

    def read_text(self, name: str) -> str | None:
        try:
            return self.fs.cat_file(self._key(name)).decode()
        except FileNotFoundError:
            return None

    def glob(self, pattern: str) -> list[str]:
        self.fs.invalidate_cache(self.path)
        return sorted(p[len(self.path) + 1:] for p in self.fs.glob(self._key(pattern)))

    def remove(self, *names: str) -> None:
        for name in names:
            try:
                self.fs.rm(self._key(name), recursive=True)
            except FileNotFoundError:
                pass
        self.fs.invalidate_cache(self.path)
        self._sizes = None

    def pull(self, folder: str) -> None:
        """Brings `folder` (a job's journal) from the store into the staging folder: a rerun on another
        machine, or after the staging folder was lost, resumes from what the store holds."""
        target = self.local / folder
        for name in self.glob(f"{folder}/*"):
            if not (self.local / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._key(name), str(self.local / name))

    def abort_unfinished(self) -> int:
        """Aborts multipart uploads under the prefix that a killed job left unfinished; returns how many."""
        bucket, _, prefix = self.path.partition("/")
        aborted = 0
        try:
            uploads = self.fs.list_multipart_uploads(bucket)
        except (AttributeError, NotImplementedError, OSError):
            return 0
        for upload in uploads:
            if upload.get("Key", "").startswith(prefix + "/"):
                self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                                UploadId=upload["UploadId"])
                aborted += 1
        return aborted


JobOutput = LocalOutput | RemoteOutput  # where a job's files end up
