"""The artifact store: large incident data (code windows, prompts, diffs, transcripts) on disk.

Workflow history only ever carries an `ArtifactRef` (key, hash, size). Writes are atomic
(temp file + rename) so a retried activity that writes the same artifact again leaves one
complete file, never a torn one.

Every write is redacted here, the one door to the disk: repository files, tool output and
test logs can carry credentials, and an artifact is read by people (the CLI, Slack, the
pull request body) long after the incident. Diffs are redacted line by line for their
file's language, source files as code, JSON value by value, all else as text
(remedy.redact.redactor_for). What a model wrote (`model_output`) is redacted as code only,
so a cached answer replays as the model gave it; the model never saw an unredacted secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from remedy.models import ArtifactRef
from remedy.names import is_safe_id
from remedy.redact import redact_code, redact_text, redact_value, redactor_for


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not parts or any(not is_safe_id(p) for p in parts):
            raise ValueError(f"artifact key {key!r} must be '/'-separated names of [A-Za-z0-9._-]")
        return self.root.joinpath(*parts)

    def put_bytes(self, key: str, data: bytes, *, model_output: bool = False) -> ArtifactRef:
        """Write an artifact file atomically, its credentials redacted first."""
        data = _redacted(key, data, model_output)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ArtifactRef(key=key, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def put_text(self, key: str, text: str, *, model_output: bool = False) -> ArtifactRef:
        return self.put_bytes(key, text.encode("utf-8"), model_output=model_output)

    def put_json(self, key: str, value: Any, *, model_output: bool = False) -> ArtifactRef:
        return self.put_bytes(key, _json(value).encode("utf-8"), model_output=model_output)

    def get_bytes(self, ref: ArtifactRef | str) -> bytes:
        key = ref if isinstance(ref, str) else ref.key
        return self._path(key).read_bytes()

    def get_text(self, ref: ArtifactRef | str) -> str:
        return self.get_bytes(ref).decode("utf-8")

    def get_json(self, ref: ArtifactRef | str) -> Any:
        return json.loads(self.get_text(ref))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def path_of(self, ref: ArtifactRef | str) -> Path:
        return self._path(ref if isinstance(ref, str) else ref.key)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _redacted(key: str, data: bytes, model_output: bool) -> bytes:
    """`data` as it may be stored under `key`: unchanged bytes when nothing in it is a secret."""
    text = data.decode("utf-8", errors="surrogateescape")
    if key.endswith(".json"):
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            clean = redact_value(value, redact_code if model_output else redact_text)
            return data if clean == value else _json(clean).encode("utf-8", "surrogateescape")
    redact = redactor_for(key)
    if model_output and redact is redact_text:
        redact = redact_code
    clean_text = redact(text)
    return data if clean_text == text else clean_text.encode("utf-8", errors="surrogateescape")
