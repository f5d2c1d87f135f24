"""The artifact store: large incident data (code windows, prompts, diffs, transcripts) on disk.

Workflow history only ever carries an `ArtifactRef` (key, hash, size). Writes are atomic
(temp file + rename) so a retried activity that writes the same artifact again leaves one
complete file, never a torn one.
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


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not parts or any(not is_safe_id(p) for p in parts):
            raise ValueError(f"artifact key {key!r} must be '/'-separated names of [A-Za-z0-9._-]")
        return self.root.joinpath(*parts)

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
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

    def put_text(self, key: str, text: str) -> ArtifactRef:
        return self.put_bytes(key, text.encode("utf-8"))

    def put_json(self, key: str, value: Any) -> ArtifactRef:
        return self.put_text(key, json.dumps(value, indent=2, sort_keys=True, default=str))

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
