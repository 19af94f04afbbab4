"""How fast our byte-level BPE trains and encodes, in pure Python.

Prints, for 1 MB of the Python standard library's source and for Tiny Shakespeare (shipped
with llmkit):

- training time to a 1,024-token vocabulary (incremental pair counts, words counted once);
- encoding throughput in MB/s, with a cold word cache and a warm one;
- on a small slice, the time of the naive loop that recounts every pair of the whole text
  after every merge, against ours on the same slice (the ratio grows with the text).

    python bench/bpe.py
    python bench/bpe.py --vocab-size 2048 --naive-chars 20000
"""

from __future__ import annotations

import argparse
import time

import regex

from llmkit.data.text import python_stdlib_source, tiny_shakespeare
from llmkit.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, get_pair_counts, merge_pair


def naive_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The first version everyone writes: recount all pairs of all words after each merge."""
    words = [list(word.encode("utf-8")) for word in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: dict[tuple[int, int], int] = {}
        for word in words:
            for pair, n in get_pair_counts(word).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        words = [merge_pair(word, pair, new_id) for word in words]
        merges.append(pair)
    return merges


def seconds(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def bench_corpus(name: str, text: str, vocab_size: int) -> None:
    megabytes = len(text.encode("utf-8")) / 1e6
    train_s, tokenizer = seconds(BPETokenizer.train, text, vocab_size)
    fresh = BPETokenizer(tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens)
    cold_s, ids = seconds(fresh.encode, text)
    warm_s, _ = seconds(fresh.encode, text)
    assert fresh.decode(ids) == text
    print(
        f"{name:>14}: {megabytes:.2f} MB -> {tokenizer.vocab_size} tokens: train {train_s:.2f} s | "
        f"encode {megabytes / cold_s:.1f} MB/s cold cache, {megabytes / warm_s:.1f} MB/s warm "
        f"| {len(text) / len(ids):.2f} chars/token"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1_000_000, help="corpus size")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--naive-chars", type=int, default=50_000, help="slice for the naive loop")
    parser.add_argument("--naive-merges", type=int, default=256)
    args = parser.parse_args(argv)

    code = python_stdlib_source(max_chars=args.chars)
    bench_corpus("stdlib source", code, args.vocab_size)
    bench_corpus("shakespeare", tiny_shakespeare()[: args.chars], args.vocab_size)

    small = code[: args.naive_chars]
    vocab_size = 256 + args.naive_merges + 1  # + <|endoftext|>
    naive_s, naive_merges = seconds(naive_train, small, args.naive_merges)
    fast_s, tokenizer = seconds(BPETokenizer.train, small, vocab_size)
    same = naive_merges == tokenizer.merges
    print(
        f"{'naive loop':>14}: {len(small):,} chars, {args.naive_merges} merges: naive "
        f"{naive_s:.2f} s, ours {fast_s:.3f} s ({naive_s / fast_s:.0f}x faster, "
        f"{'same' if same else 'DIFFERENT'} merges)"
    )


if __name__ == "__main__":
    main()
