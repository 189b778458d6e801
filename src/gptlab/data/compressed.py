"""Reading input files through their compression (gzip, bzip2, xz, zstd), found from the
file's first bytes, not its name; a truncated or damaged stream is one GptlabError."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import IO

from gptlab.errors import GptlabError

DATA_EXTRA = "pip install 'gptlab[data]'"
READ_BYTES = 1 << 20  # bytes per read from an input file


def compression(path: Path) -> str | None:
    """"gzip", "bzip2", "xz" or "zstd" from the file's magic bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(10)
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    # "BZh" + level + the first block's magic: plain text may well start with "BZh9"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return None


class _Decompressed(io.RawIOBase):
    """A decompressing reader whose read errors (a truncated or damaged stream) become one
    GptlabError naming the file; `on_bytes` sees the compressed bytes read, for progress."""

    def __init__(self, path: Path, kind: str, on_bytes: Callable[[int], None] | None):
        self.path, self.kind = path, kind
        self.raw = _CountingFile(open(path, "rb"), on_bytes)
        if kind == "gzip":
            self.stream: IO[bytes] = gzip.GzipFile(fileobj=self.raw)
        elif kind == "bzip2":
            self.stream = bz2.BZ2File(self.raw)
        elif kind == "xz":
            self.stream = lzma.LZMAFile(self.raw)
        else:
            try:
                import zstandard
            except ImportError:
                self.raw.close()
                raise GptlabError(
                    f"{path} is zstd-compressed and the zstandard package is missing: "
                    f"{DATA_EXTRA}"
                ) from None
            self.stream = _ZstdReader(self.raw, zstandard, path)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.stream.read(len(buffer))
        except GptlabError:
            raise
        except Exception as exc:  # EOFError, OSError, LZMAError, ZstdError: all mean damage
            raise GptlabError(
                f"{self.path} is a truncated or damaged {self.kind} file ({exc}): download or "
                "compress it again"
            ) from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        self.raw.close()
        super().close()


class _ZstdReader:
    """zstd frames, one after another; unlike zstandard's stream reader, a stream cut
    inside a frame is an error, not a quiet end of data."""

    def __init__(self, raw: IO[bytes], zstandard, path: Path):
        self.raw, self.zstandard, self.path = raw, zstandard, path
        self.obj = zstandard.ZstdDecompressor().decompressobj()
        self.pending = b""
        self.started = False  # inside a frame (some of its bytes were fed)

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self.raw.read(READ_BYTES)
            if not chunk:
                if self.started and not self.obj.eof:
                    raise GptlabError(
                        f"{self.path} is a truncated zstd file (its last frame is cut off): "
                        "download or compress it again"
                    )
                break
            while chunk:
                if self.obj.eof:  # the next frame
                    self.obj = self.zstandard.ZstdDecompressor().decompressobj()
                self.started = True
                self.pending += self.obj.decompress(chunk)
                chunk = self.obj.unused_data if self.obj.eof else b""
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def close(self) -> None:
        pass


class _CountingFile(io.RawIOBase):
    """A file whose reads are reported to `on_bytes` (for progress bars)."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None] | None):
        self.f, self.on_bytes = f, on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer)
        if self.on_bytes is not None and n:
            self.on_bytes(n)
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def open_input(path: Path, on_bytes: Callable[[int], None] | None = None) -> IO[bytes]:
    """The file's bytes, decompressed when its magic bytes say it is compressed;
    `on_bytes` is called with each count of bytes read from the file itself."""
    kind = compression(path)
    raw: io.RawIOBase = (
        _Decompressed(path, kind, on_bytes) if kind else _CountingFile(open(path, "rb"), on_bytes)
    )
    return io.BufferedReader(raw, READ_BYTES)
