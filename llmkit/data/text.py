"""Real text to train on, found on this machine: text files, and Python's own source code.

- `load_text(path)`: any UTF-8 text file, with a clear message when it is missing, empty
  or in another encoding.
- `python_stdlib_source()`: the `.py` files of the Python standard library that runs this
  code, joined into one corpus. Every Python installation has it, so the course has a code
  corpus with no download (lesson 12 adapts a story model to code with it).
- `cached_download(url, sha256, filename)`: optional downloads (e.g. a bigger corpus),
  fetched once into a cache folder, checked against their SHA-256, and never needed by the
  tests or lessons, which all run offline.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sysconfig
import tempfile
import urllib.error
from functools import lru_cache
from pathlib import Path
from urllib.request import urlopen

CACHE_ENV = "LLMKIT_CACHE"

# Folders of the standard library that hold tests, installed packages or bundled data, not
# the library's own code.
SKIPPED_FOLDERS = {
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
    "ensurepip", "lib2to3", "pydoc_data", "turtledemo",
}
MAX_FILE_BYTES = 200_000  # bigger files in the standard library are generated tables
GENERATED_MARK = re.compile(r"auto-?generated|generated (by|from)|do not edit", re.IGNORECASE)


def load_text(path) -> str:
    """The contents of a UTF-8 text file, with Windows line ends turned into "\\n".

    Raises FileNotFoundError (no such file), ValueError (not UTF-8, or empty).
    """
    path = Path(path)
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"{path} {where}; pass the path of a text file (e.g. "
            "'../shared/data/tinyshakespeare.txt')."
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {error.start} is {raw[error.start]:#04x}). "
            "Convert it to UTF-8 first, e.g. open it with its real encoding "
            "(open(path, encoding='latin-1').read()) and save it with encoding='utf-8'."
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        raise ValueError(f"{path} is empty (or only whitespace); a corpus needs some text.")
    return text


def stdlib_folder() -> Path:
    """Where the standard library's `.py` files are (e.g. /usr/lib/python3.11)."""
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=4)
def stdlib_source_files(root: Path | None = None) -> tuple[Path, ...]:
    """The standard library's own code files, sorted by path.

    Leaves out tests, installed packages, bundled data, and generated or huge files.
    """
    root = Path(root) if root is not None else stdlib_folder()
    files = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_FOLDERS & set(relative.parts[:-1]) or relative.name.startswith("test_"):
            continue
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            continue
        with open(path, "rb") as handle:
            head = handle.read(600).decode("utf-8", errors="replace")
        if GENERATED_MARK.search(head):
            continue
        files.append(path)
    return tuple(files)


def python_stdlib_source(max_chars: int | None = 1_000_000, seed: int = 0) -> str:
    """The standard library's Python source as one text, at most `max_chars` long.

    Files are shuffled with `seed` (a mix of modules rather than alphabetical order) and
    each starts with a "# file: <path>" line. The same Python version and seed give the
    same text; `max_chars=None` returns everything (about 10 MB).
    """
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}.")
    root = stdlib_folder()
    files = list(stdlib_source_files(root))
    if not files:
        raise FileNotFoundError(
            f"found no .py files under {root}; this Python installation has no standard "
            "library source. Use load_text() on any code file instead."
        )
    random.Random(seed).shuffle(files)
    parts, total = [], 0
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        part = f"# file: {path.relative_to(root).as_posix()}\n{source.rstrip()}\n\n"
        parts.append(part)
        total += len(part)
        if max_chars is not None and total >= max_chars:
            break
    text = "".join(parts)
    return text if max_chars is None else text[:max_chars]


def cache_folder(cache_dir=None) -> Path:
    """The download cache: `cache_dir` if given, else $LLMKIT_CACHE, else ~/.cache/llmkit."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "llmkit"


class DownloadError(OSError):
    """An optional download could not be fetched (no network, server error...)."""


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_download(url: str, sha256: str, filename: str, cache_dir=None) -> Path:
    """Fetch `url` once into the cache as `filename`, check its SHA-256, return its path.

    A cached file with the right checksum is returned without touching the network. The
    download goes to a temporary file that is renamed into place only once complete and
    verified, so an interrupted run never leaves a half file behind.
    Raises DownloadError when the file cannot be fetched (e.g. offline), ValueError when
    the checksum does not match.
    """
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}.")
    if not filename or Path(filename).name != filename:
        raise ValueError(f"filename must be a plain file name (no folders), got {filename!r}.")
    sha256 = sha256.lower()
    folder = cache_folder(cache_dir)
    target = folder / filename
    if target.is_file() and file_sha256(target) == sha256:
        return target

    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{filename}.", delete=False)
    partial = Path(handle.name)
    digest = hashlib.sha256()
    try:
        with handle:
            try:
                with urlopen(url, timeout=30) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        handle.write(block)
            except (urllib.error.URLError, OSError) as error:
                raise DownloadError(
                    f"could not download {url} ({error}). This download is optional: the "
                    f"course runs without it. To use the file offline, fetch it on a machine "
                    f"with internet access and copy it to {target} (its SHA-256 must be "
                    f"{sha256})."
                ) from error
        got = digest.hexdigest()
        if got != sha256:
            raise ValueError(
                f"the file downloaded from {url} has SHA-256 {got}, but {sha256} was "
                "expected: the download is damaged or the file changed on the server. Try "
                f"again, or place a file with the right checksum at {target}."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
