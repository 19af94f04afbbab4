"""Local text: loading files, the standard-library code corpus, and cached downloads.

No test touches the network: downloads come from file:// URLs or a replaced opener.
"""

import hashlib
import urllib.error
from pathlib import Path

import pytest

import llmkit.data.text as text_module
from llmkit.data.text import (
    DownloadError,
    cached_download,
    load_text,
    python_stdlib_source,
    stdlib_folder,
    tiny_shakespeare,
)

# ----- load_text ----------------------------------------------------------------------------


def test_load_text_reads_utf8_and_normalises_line_ends(tmp_path):
    path = tmp_path / "story.txt"
    path.write_bytes("\ufeffOnce upon a time,\r\nun café 東京 😀\r\n".encode("utf-8"))
    assert load_text(path) == "Once upon a time,\nun café 東京 😀\n"


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_text(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("déjà vu".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8.*byte 1 is 0xe9"):
        load_text(latin1)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n")
    with pytest.raises(ValueError, match="empty"):
        load_text(empty)


# ----- the standard library as a code corpus ---------------------------------------------


def split_files(corpus: str) -> list[tuple[str, str]]:
    """The corpus's "# file: <path>" sections -> [(path, source), ...]."""
    sections = corpus.split("# file: ")[1:]
    return [tuple(section.split("\n", 1)) for section in sections]


def test_stdlib_source_is_real_library_code_without_tests():
    corpus = python_stdlib_source(max_chars=300_000, seed=0)
    assert len(corpus) == 300_000
    root = stdlib_folder()
    sections = split_files(corpus)
    assert len(sections) > 5
    for relative, source in sections[:-1]:  # the last section is cut at max_chars
        parts = Path(relative).parts
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts), relative
        on_disk = (root / relative).read_text(encoding="utf-8")
        assert source.rstrip() == on_disk.rstrip(), relative
    compile(sections[0][1], sections[0][0], "exec")  # it is Python the interpreter accepts


def test_stdlib_source_is_deterministic_per_seed():
    first = python_stdlib_source(max_chars=50_000, seed=1)
    assert python_stdlib_source(max_chars=50_000, seed=1) == first
    assert python_stdlib_source(max_chars=50_000, seed=2) != first
    with pytest.raises(ValueError, match="positive int or None"):
        python_stdlib_source(max_chars=0)


# ----- cached downloads -------------------------------------------------------------------


@pytest.fixture()
def remote_file(tmp_path):
    """A 'remote' file served from a file:// URL, and its SHA-256."""
    source = tmp_path / "server" / "corpus.txt"
    source.parent.mkdir()
    payload = ("a small corpus ✓\n" * 1000).encode("utf-8")
    source.write_bytes(payload)
    return source.as_uri(), hashlib.sha256(payload).hexdigest(), payload


def refuse_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


def test_download_then_cache_hit_without_network(remote_file, tmp_path, monkeypatch):
    url, sha256, payload = remote_file
    cache = tmp_path / "cache"
    path = cached_download(url, sha256, "corpus.txt", cache_dir=cache)
    assert path == cache / "corpus.txt"
    assert path.read_bytes() == payload
    monkeypatch.setattr(text_module, "urlopen", refuse_network)
    assert cached_download(url, sha256.upper(), "corpus.txt", cache_dir=cache) == path
    assert sorted(p.name for p in cache.iterdir()) == ["corpus.txt"]  # no temporary files


def test_cache_folder_comes_from_the_environment(remote_file, tmp_path, monkeypatch):
    url, sha256, payload = remote_file
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "env-cache"))
    path = cached_download(url, sha256, "corpus.txt")
    assert path == tmp_path / "env-cache" / "corpus.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_checksum_mismatch_raises_and_keeps_nothing(remote_file, tmp_path):
    url, sha256, _ = remote_file
    cache = tmp_path / "cache"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ValueError, match=f"SHA-256 {sha256}, but {wrong} was expected"):
        cached_download(url, wrong, "corpus.txt", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_damaged_cached_file_is_fetched_again(remote_file, tmp_path):
    url, sha256, payload = remote_file
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpus.txt").write_bytes(payload[:100])  # e.g. a copy cut short by hand
    assert cached_download(url, sha256, "corpus.txt", cache_dir=cache).read_bytes() == payload


def test_offline_error_says_the_download_is_optional(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "urlopen", refuse_network)
    cache = tmp_path / "cache"
    sha256 = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(DownloadError, match="optional.*copy it to .*corpus.txt") as caught:
        cached_download("https://example.invalid/corpus.txt", sha256, "corpus.txt", cache_dir=cache)
    assert isinstance(caught.value, OSError)
    assert list(cache.iterdir()) == []


def test_download_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        cached_download("file:///nowhere", "abc", "x.txt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        cached_download("file:///nowhere", "0" * 64, "../x.txt", cache_dir=tmp_path)


# ----- Tiny Shakespeare, shipped with the package --------------------------------------------


def test_tiny_shakespeare_is_the_published_corpus():
    text = tiny_shakespeare()
    # The figures of char-rnn and nanoGPT's shakespeare_char: 1,115,394 characters, 65 distinct.
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    readme = (text_module.CORPORA / "README.md").read_text()
    digest = hashlib.sha256(text_module.TINY_SHAKESPEARE.read_bytes()).hexdigest()
    assert digest in readme   # the checksum its README states


def test_tiny_shakespeare_refuses_a_damaged_copy(tmp_path, monkeypatch):
    original = text_module.TINY_SHAKESPEARE.read_bytes()
    copy = tmp_path / "tinyshakespeare.txt"
    monkeypatch.setattr(text_module, "TINY_SHAKESPEARE", copy)
    copy.write_bytes(original.replace(b"\n", b"\r\n"))   # as a Windows checkout may write it
    assert tiny_shakespeare() == original.decode("utf-8")
    copy.write_bytes(original.replace(b"ROMEO", b"ROMEA", 1))
    with pytest.raises(ValueError, match="changed or damaged.*git checkout"):
        tiny_shakespeare()
    copy.unlink()
    with pytest.raises(FileNotFoundError, match="pip install"):
        tiny_shakespeare()
