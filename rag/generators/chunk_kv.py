"""Per-passage KV caches on disk: the keys/values of a note chunk, read once by the model, kept for reuse.

A file holds one passage's keys/values as llama.cpp saved them (`llama_state_seq_get_data`), computed
after the fixed opening of the evidence prompt. It is used only for the same model file and KV type
(`model_key`), the same opening (`prefix`: a changed system prompt is a new key) and the same passage
tokens; its header says all of that, and a checksum covers the payload. A file that does not match or
is damaged is deleted and rebuilt, never loaded. The directory is bounded: past `max_bytes` the least
recently used files go (a hit touches the file). At f16 a token costs ~28 KB for the 1.5B model, so a
400-character chunk is ~8 MB and the 189-chunk corpus ~1.3 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from ..atomic import commit_file

MAGIC = b"RAGKV\x00"
FORMAT = 1
MEMORY_ITEMS = 8  # states kept in RAM as well (~8 MB each): the passages of the last question or two


def token_hash(tokens: Sequence[int]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()[:32]


class ChunkKVStore:
    def __init__(self, directory: Path, model_key: str, max_bytes: int, memory_items: int = MEMORY_ITEMS):
        self.dir = Path(directory)
        self.model_key = model_key
        self.max_bytes = max_bytes
        self.memory_items = memory_items
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "rejected": 0, "written": 0, "evicted": 0}

    def _header(self, key: str, prefix: Sequence[int], tokens: Sequence[int], payload: bytes) -> dict:
        return {"format": FORMAT, "model": self.model_key, "prefix": token_hash(prefix), "passage": key,
                "tokens": token_hash(tokens), "n_tokens": len(tokens), "bytes": len(payload),
                "crc32": zlib.crc32(payload)}

    def path(self, key: str, prefix: Sequence[int]) -> Path:
        name = hashlib.sha256(f"{self.model_key}\x1f{token_hash(prefix)}\x1f{key}".encode()).hexdigest()[:40]
        return self.dir / f"{name}.kv"

    def get(self, key: str, prefix: Sequence[int], tokens: Sequence[int]) -> bytes | None:
        path = self.path(key, prefix)
        mem_key = path.name + token_hash(tokens)
        if mem_key in self._memory:
            self._memory.move_to_end(mem_key)
            self.stats["hits"] += 1
            return self._memory[mem_key]
        payload = self._read(path, key, prefix, tokens)
        if payload is None:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        self._remember(mem_key, payload)
        return payload

    def _read(self, path: Path, key: str, prefix, tokens) -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            self._reject(path)
            return None
        try:
            if not data.startswith(MAGIC):
                raise ValueError("magic")
            (n,) = struct.unpack_from("<I", data, len(MAGIC))
            start = len(MAGIC) + 4
            header = json.loads(data[start:start + n])
            payload = data[start + n:]
            if header != self._header(key, prefix, tokens, payload):
                raise ValueError("header")
        except (ValueError, struct.error, UnicodeDecodeError):
            self._reject(path)  # another model, prompt or text, or a torn/damaged file: rebuilt by the caller
            return None
        return payload

    def _reject(self, path: Path) -> None:
        self.stats["rejected"] += 1
        try:
            path.unlink()
        except OSError:
            pass

    def put(self, key: str, prefix: Sequence[int], tokens: Sequence[int], payload: bytes) -> None:
        path = self.path(key, prefix)
        header = json.dumps(self._header(key, prefix, tokens, payload), sort_keys=True).encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(header)) + header + payload)
            commit_file(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk costs the cache, not the answer
            return
        self.stats["written"] += 1
        self._remember(path.name + token_hash(tokens), payload)
        self._evict()

    def _remember(self, mem_key: str, payload: bytes) -> None:
        self._memory[mem_key] = payload
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.kv")) if self.dir.exists() else []

    def size_bytes(self) -> int:
        total = 0
        for p in self.files():
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def _evict(self) -> None:
        entries = []
        for p in self.files():
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(e[1] for e in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
            except OSError:
                continue
            total -= size
            self.stats["evicted"] += 1
