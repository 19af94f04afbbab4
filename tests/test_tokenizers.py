"""Tokenizers against independent references.

- GPT-2 compatibility: a vocabulary we train is saved in GPT-2's file format and loaded
  into Hugging Face's GPT2TokenizerFast, and its ranks into a tiktoken.Encoding; all three
  must give the same ids on varied text.
- Lesson 02's helpers against brute-force versions, and the fast (incremental) trainer
  against a naive one that recounts every pair after every merge.
- Round trips on arbitrary Unicode, save/load, and the error messages.
"""

import json
import random
import warnings

import pytest
import regex
import tiktoken
from tokenizers.pre_tokenizers import ByteLevel
from transformers import GPT2TokenizerFast

import llmkit.tokenizers
from llmkit.data.text import python_stdlib_source
from llmkit.tokenizers import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    get_pair_counts,
    merge_pair,
)
from llmkit.tokenizers.gpt2_files import bytes_to_unicode

WORDS = {
    "en": "the cat sat on a warm mat and looked at the little dog who was sleeping".split(),
    "fr": "le chat était très content près de la fenêtre où brûlait une bougie".split(),
    "de": "die Straße führt über die Brücke zum großen Schloß mit schönen Türmen".split(),
    "ru": "маленькая собака бежала по длинной улице к своему дому".split(),
    "el": "η μικρή γάτα κοιμάται στον ήλιο κοντά στη θάλασσα".split(),
    "ja": "今日は 天気が 良いので 公園で 散歩を しました とても 楽しかった".split(),
    "zh": "小猫 在 花园 里 玩 球 它 很 高兴".split(),
    "emoji": "😀 🐈 🐕‍🦺 👍🏽 🇫🇷 ✨ ❤️ 🎉".split(),
}

HAND_PICKED = [
    "",
    "a",
    " ",
    "Hello, world!",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\n  mixed \t \n",
    "Café naïve façade résumé coöperate",
    "東京タワーは高い。北京欢迎你！",
    "Привет, мир! Γειά σου Κόσμε! שלום עולם مرحبا بالعالم",
    "emoji 😀😃😄 family 👨‍👩‍👧‍👦 flags 🇯🇵🇧🇷 skin 👋🏿",
    "combining: e\u0301 a\u0308 zero\u200bwidth \ufeffbom",
    "numbers 1234567890 3.14159 1e-10 ½ ⅔ ٣٤٥",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n        pass\n",
    "it's they're we've I'm you'll he'd 's 't",
    "x" * 300,
    "\u0000\u0001\u007f control",
]


def random_unicode(rng: random.Random, length: int) -> str:
    """Random text mixing scripts, emoji, combining marks and whitespace runs."""
    ranges = [(0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF),
              (0x300, 0x36F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F),
              (0xAC00, 0xAD00)]
    pieces = []
    for _ in range(length):
        if rng.random() < 0.1:
            pieces.append(rng.choice([" ", "  ", "\n", "\t", "   \n  ", "\u200d"]))
        else:
            low, high = rng.choice(ranges)
            pieces.append(chr(rng.randint(low, high)))
    return "".join(pieces)


def prose(rng: random.Random, n_sentences: int) -> str:
    """Seeded sentences in several languages and scripts, with digits and punctuation."""
    sentences = []
    for _ in range(n_sentences):
        words = WORDS[rng.choice(sorted(WORDS))]
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        sentences.append(sentence + rng.choice([".", "!", "?", ",", f" {rng.randint(0, 9999)}."]))
    return " ".join(sentences) + "\n"


@pytest.fixture(scope="module")
def corpus() -> str:
    rng = random.Random(0)
    return python_stdlib_source(250_000, seed=1) + prose(rng, 3000)


@pytest.fixture(scope="module")
def trained(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=512)


@pytest.fixture(scope="module")
def held_out_texts() -> list[str]:
    rng = random.Random(123)
    return [
        python_stdlib_source(120_000, seed=7)[-60_000:],  # code the tokenizer never saw
        prose(rng, 400),
        random_unicode(rng, 3000),
        "".join(chr(b) for b in range(256)),  # every Latin-1 character: all byte stand-ins
        f"first story{ENDOFTEXT}second story {ENDOFTEXT}\n{ENDOFTEXT}{ENDOFTEXT}",
        *HAND_PICKED,
    ]


# ----- lesson 02 helpers against brute force --------------------------------------------


def test_get_pair_counts_matches_brute_force():
    rng = random.Random(1)
    for length in [0, 1, 2, 3, 10, 200]:
        ids = [rng.randint(0, 5) for _ in range(length)]
        expected = {}
        for a in range(6):
            for b in range(6):
                n = sum(1 for i in range(length - 1) if ids[i] == a and ids[i + 1] == b)
                if n:
                    expected[(a, b)] = n
        assert get_pair_counts(ids) == expected


def test_merge_pair_matches_string_replace():
    # str.replace also replaces non-overlapping occurrences from left to right.
    rng = random.Random(2)
    for length in [0, 1, 2, 5, 50, 300]:
        ids = [rng.randint(0, 3) for _ in range(length)]
        for pair in [(0, 1), (2, 2), (3, 0)]:
            as_text = "".join(chr(97 + i) for i in ids)
            replaced = as_text.replace(chr(97 + pair[0]) + chr(97 + pair[1]), "Z")
            expected = [99 if c == "Z" else ord(c) - 97 for c in replaced]
            assert merge_pair(ids, pair, 99) == expected


def naive_bpe_merges(text: str, n_new_tokens: int) -> list[tuple[bytes, bytes]]:
    """Recount every pair of every word occurrence after every merge (slow and obvious)."""
    words = [[bytes([b]) for b in word.encode("utf-8")] for word in regex.findall(GPT2_SPLIT_PATTERN, text)]
    vocab = {bytes([b]) for b in range(256)}
    merged, merges = set(), []
    id_of = {bytes([b]): b for b in range(256)}
    while len(vocab) < 256 + n_new_tokens:
        counts = {}
        for word in words:
            for i in range(len(word) - 1):
                pair = (word[i], word[i + 1])
                if pair not in merged:
                    counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        # Most frequent; ties go to the smaller pair of ids.
        best = min(counts, key=lambda p: (-counts[p], id_of[p[0]], id_of[p[1]]))
        token = best[0] + best[1]
        if token not in vocab:
            vocab.add(token)
            id_of[token] = len(id_of)
        merged.add(best)
        merges.append(best)
        for w, word in enumerate(words):
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(token)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[w] = out
    return merges


def test_incremental_training_matches_naive_recount():
    rng = random.Random(3)
    text = prose(rng, 120) + python_stdlib_source(6_000, seed=2) + "        \n    " * 20
    n_new = 120
    tokenizer = BPETokenizer.train(text, vocab_size=256 + n_new, special_tokens=())
    ours = [(tokenizer.vocab[a], tokenizer.vocab[b]) for a, b in tokenizer.merges]
    assert ours == naive_bpe_merges(text, n_new)


# ----- GPT-2 compatibility ----------------------------------------------------------------


def test_byte_alphabet_matches_hugging_face():
    assert sorted(bytes_to_unicode().values()) == sorted(ByteLevel.alphabet())


def test_ids_match_hugging_face_and_tiktoken(trained, held_out_texts, tmp_path):
    assert trained.vocab_size == 512
    encoder_json, vocab_bpe = trained.save_gpt2_files(tmp_path)
    hugging_face = GPT2TokenizerFast(vocab=str(encoder_json), merges=str(vocab_bpe))
    tiktoken_encoding = tiktoken.Encoding(
        name="llmkit-test",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks={token: i for i, token in trained.vocab.items()},
        special_tokens=trained.special_tokens,
    )
    reloaded = BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    assert reloaded.special_tokens == {ENDOFTEXT: 511}
    for text in held_out_texts:
        ids = trained.encode(text, allowed_special="all")
        assert ids == hugging_face.encode(text), text[:60]
        assert ids == tiktoken_encoding.encode(text, allowed_special="all"), text[:60]
        assert reloaded.encode(text, allowed_special="all") == ids
        assert trained.decode(ids) == hugging_face.decode(ids) == tiktoken_encoding.decode(ids)


def test_allowed_special_modes_match_tiktoken(trained):
    reference = tiktoken.Encoding(
        name="llmkit-test-specials",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks={token: i for i, token in trained.vocab.items()},
        special_tokens=trained.special_tokens,
    )
    text = f"end{ENDOFTEXT}start <|endoftext|> again"
    assert trained.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert trained.encode(text, allowed_special="all").count(trained.special_tokens[ENDOFTEXT]) == 2
    # The default is the safe one: typed special-token text stays ordinary text.
    assert trained.encode(text) == reference.encode_ordinary(text)
    assert trained.encode(text, allowed_special="none") == reference.encode_ordinary(text)
    assert trained.encode(text, allowed_special={ENDOFTEXT}) == reference.encode(
        text, allowed_special={ENDOFTEXT}
    )
    assert trained.encode(text, allowed_special=set()) == reference.encode_ordinary(text)
    with pytest.raises(ValueError, match="not special tokens"):
        trained.encode(text, allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="'all', 'none'"):
        trained.encode(text, allowed_special="some")


def test_training_never_merges_across_special_tokens():
    text = ("ab" + ENDOFTEXT) * 50
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tokenizer = BPETokenizer.train(text, vocab_size=256 + 5 + 1)
    learned = {tokenizer.vocab[a] + tokenizer.vocab[b] for a, b in tokenizer.merges}
    assert learned == {b"ab"}  # the only pair outside the special-token text


# ----- round trips ------------------------------------------------------------------------


def test_round_trip_on_arbitrary_unicode(trained):
    rng = random.Random(4)
    texts = HAND_PICKED + [random_unicode(rng, rng.randint(0, 400)) for _ in range(60)]
    chars = CharTokenizer.train("".join(texts))
    for text in texts:
        assert trained.decode(trained.encode(text)) == text
        assert chars.decode(chars.encode(text)) == text
        assert "".join(chars.token_pieces(chars.encode(text))) == text


def test_decode_accepts_tensors_and_rejects_unknown_ids(trained):
    import torch

    ids = trained.encode("tensors too")
    assert trained.decode(torch.tensor(ids)) == "tensors too"
    with pytest.raises(ValueError, match="token ids must be ints"):
        trained.decode([0, trained.vocab_size])


def test_token_pieces_show_split_characters_readably():
    bytes_only = BPETokenizer.train("€uro", vocab_size=257)  # no merges: one token per byte
    ids = bytes_only.encode("a€" + ENDOFTEXT, allowed_special="all")
    assert bytes_only.token_pieces(ids) == ["a", "\\xe2", "\\x82", "\\xac", ENDOFTEXT]
    assert bytes_only.decode(ids[:2]) == "a\ufffd"  # a cut-off character decodes to U+FFFD


def test_char_tokenizer_vocabulary_and_specials():
    text = "hello world\nHELLO"
    tokenizer = CharTokenizer.train(text + ENDOFTEXT, special_tokens=[ENDOFTEXT])
    expected_chars = sorted(set(text))
    assert tokenizer.chars == expected_chars
    assert tokenizer.encode("hello") == [expected_chars.index(c) for c in "hello"]
    assert tokenizer.special_tokens == {ENDOFTEXT: len(expected_chars)}
    assert tokenizer.vocab_size == len(expected_chars) + 1
    assert tokenizer.encode(f"he{ENDOFTEXT}", allowed_special="all") == [
        expected_chars.index("h"), expected_chars.index("e"), len(expected_chars)
    ]


# ----- save and load ------------------------------------------------------------------------


def test_save_and_load_round_trip(trained, held_out_texts, tmp_path):
    chars = CharTokenizer.train("some text with ünïcödé ✓", special_tokens=["<|pad|>"])
    for tokenizer, name in [(trained, "bpe.json"), (chars, "char.json")]:
        path = tokenizer.save(tmp_path / name)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["type"] == tokenizer.kind
        loaded = llmkit.tokenizers.load(path)
        assert type(loaded) is type(tokenizer)
        assert loaded.special_tokens == tokenizer.special_tokens
        assert loaded.vocab_size == tokenizer.vocab_size
        text = "text ✓<|pad|>"
        assert (type(tokenizer).load(path).encode(text, allowed_special="all")
                == tokenizer.encode(text, allowed_special="all"))
    loaded = BPETokenizer.load(tmp_path / "bpe.json")
    for text in held_out_texts[:3]:
        assert loaded.encode(text) == trained.encode(text)


def test_load_errors_say_what_to_do(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        llmkit.tokenizers.load(tmp_path / "missing.json")

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(trained.save(tmp_path / "ok.json").read_text()[:500], encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON.*tokenizer.save"):
        llmkit.tokenizers.load(corrupt)

    with pytest.raises(ValueError, match="holds a 'bpe' tokenizer.*llmkit.tokenizers.load"):
        CharTokenizer.load(tmp_path / "ok.json")

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"type": "wordpiece", "format_version": 1}))
    with pytest.raises(ValueError, match="'wordpiece'.*expected one of"):
        llmkit.tokenizers.load(unknown)

    damaged = json.loads((tmp_path / "ok.json").read_text(encoding="utf-8"))
    damaged["merges"][5] = "not-a-token neither"
    (tmp_path / "damaged.json").write_text(json.dumps(damaged), encoding="utf-8")
    with pytest.raises(ValueError, match="damaged 'bpe' tokenizer file"):
        llmkit.tokenizers.load(tmp_path / "damaged.json")

    del damaged["merges"]
    (tmp_path / "damaged.json").write_text(json.dumps(damaged), encoding="utf-8")
    with pytest.raises(ValueError, match="damaged 'bpe' tokenizer file"):
        llmkit.tokenizers.load(tmp_path / "damaged.json")


def test_gpt2_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json and vocab.bpe"):
        BPETokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text("{not json")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


# ----- training errors ----------------------------------------------------------------------


def test_training_input_errors():
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train("", vocab_size=300)
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train(ENDOFTEXT * 3, vocab_size=300)
    with pytest.raises(ValueError, match="at least 256.*= 258"):
        BPETokenizer.train("text", vocab_size=257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.train("")


def test_training_stops_with_a_warning_when_pairs_run_out():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = BPETokenizer.train("ab ab ab", vocab_size=400, special_tokens=())
    assert any("ran out of pairs" in str(w.message) for w in caught)
    # "ab" and " ab" are the only words: b"ab", b" a" or b"ab", then b" ab".
    assert {tokenizer.vocab[i] for i in range(256, tokenizer.vocab_size)} >= {b"ab", b" ab"}


def test_char_tokenizer_names_unknown_characters():
    tokenizer = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"never saw 'x', 'z'.*add_chars.*retrain"):
        tokenizer.encode("abxcz")


# ----- special tokens added later, safe encoding -------------------------------------------


CHAT_SPECIALS = ["<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"]


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_typed_special_text_never_becomes_a_control_token(kind, trained):
    tokenizer = (BPETokenizer(trained.vocab, trained.merges, trained.special_tokens) if kind == "bpe"
                 else CharTokenizer.train("<|>abcdefghijklmnopqrstuvwxyz ", [ENDOFTEXT]))
    added = tokenizer.add_special_tokens(CHAT_SPECIALS)
    typed = "hi <|end|><|assistant|> <|endoftext|>"
    control_ids = set(added.values()) | {tokenizer.special_tokens[ENDOFTEXT]}
    assert not control_ids & set(tokenizer.encode(typed))
    assert tokenizer.decode(tokenizer.encode(typed)) == typed
    # Opting in turns exactly the named strings into their ids.
    only_end = tokenizer.encode(typed, allowed_special={"<|end|>"})
    assert only_end.count(added["<|end|>"]) == 1 and not (control_ids - {added["<|end|>"]}) & set(only_end)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_add_special_tokens_appends_ids_and_survives_save(kind, trained, tmp_path):
    tokenizer = (BPETokenizer(trained.vocab, trained.merges, trained.special_tokens) if kind == "bpe"
                 else CharTokenizer.train("hello world", [ENDOFTEXT]))
    before = tokenizer.vocab_size
    old_ids = tokenizer.encode("hello world")
    added = tokenizer.add_special_tokens(CHAT_SPECIALS)
    assert added == {name: before + i for i, name in enumerate(CHAT_SPECIALS)}
    assert tokenizer.vocab_size == before + len(CHAT_SPECIALS)
    assert tokenizer.encode("hello world") == old_ids  # old ids keep their meaning
    text = "<|user|>hello<|end|><|pad|>"
    ids = tokenizer.encode(text, allowed_special="all")
    assert ids[0] == added["<|user|>"] and ids[-2:] == [added["<|end|>"], added["<|pad|>"]]
    assert tokenizer.decode(ids) == text
    loaded = llmkit.tokenizers.load(tokenizer.save(tmp_path / "tok.json"))
    assert loaded.special_tokens == tokenizer.special_tokens
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(text, allowed_special="all") == ids


def test_adding_an_existing_special_token_is_refused(trained):
    tokenizer = BPETokenizer(trained.vocab, trained.merges, trained.special_tokens)
    with pytest.raises(ValueError, match=r"already a special token.*\[511\].*tokenizer.special_tokens"):
        tokenizer.add_special_tokens(["<|user|>", ENDOFTEXT])
    with pytest.raises(ValueError, match="named twice"):
        tokenizer.add_special_tokens(["<|user|>", "<|user|>"])
    with pytest.raises(ValueError, match="non-empty strings"):
        tokenizer.add_special_tokens([""])
    assert tokenizer.vocab_size == 512 and "<|user|>" not in tokenizer.special_tokens  # unchanged


# ----- decoding: O(tokens), and one id at a time ---------------------------------------------


def test_decode_does_not_recount_the_vocabulary(trained, monkeypatch):
    tokenizer = BPETokenizer(trained.vocab, trained.merges, trained.special_tokens)
    assert tokenizer.vocab_size == 512
    calls = []
    original = BPETokenizer.count_ids
    monkeypatch.setattr(BPETokenizer, "count_ids", lambda self: calls.append(1) or original(self))
    ids = tokenizer.encode("the cat sat on the mat " * 50)
    assert tokenizer.decode(ids) == "the cat sat on the mat " * 50
    decoder = tokenizer.stream_decoder()
    for i in ids:
        decoder.push(i)
    assert calls == []  # counted once at construction, never per id


def test_stream_decoder_matches_one_shot_utf8_decoding(trained):
    bytes_only = BPETokenizer.train("€uro", vocab_size=257)  # one token per byte
    euro = bytes_only.encode("€")
    decoder = bytes_only.stream_decoder()
    assert [decoder.push(i) for i in euro] == ["", "", "€"]  # held back until whole
    assert decoder.push(euro[0]) == "" and decoder.flush() == "\ufffd"
    rng = random.Random(5)
    for tokenizer in (bytes_only, trained):
        for _ in range(200):
            # Random ids: cut-off characters, stray continuation bytes, special tokens.
            ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(0, 30))]
            expected = b"".join(
                tokenizer.vocab[i] if i in tokenizer.vocab else tokenizer.special_by_id[i].encode()
                for i in ids
            ).decode("utf-8", errors="replace")  # Python's own one-shot decoder
            decoder = tokenizer.stream_decoder()
            assert "".join(decoder.push(i) for i in ids) + decoder.flush() == expected
    text = random_unicode(rng, 500)
    decoder = trained.stream_decoder()
    assert "".join(decoder.push(i) for i in trained.encode(text)) + decoder.flush() == text
    chars = CharTokenizer.train(text)
    decoder = chars.stream_decoder()
    assert "".join(decoder.push(i) for i in chars.encode(text)) + decoder.flush() == text
    with pytest.raises(ValueError, match="token ids must be ints"):
        trained.stream_decoder().push(trained.vocab_size)


# ----- damaged files ---------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("vocab", [["a", 1]], '"vocab" must map token strings to int ids, got list'),
    ("vocab", {"a": "one"}, '"vocab" must map token strings to int ids'),
    ("pattern", "(unclosed", '"pattern".*is not a valid regular expression'),
    ("pattern", 42, '"pattern" must be a regular expression string'),
    ("merges", "a b", '"merges" must be a list'),
    ("merges", ["Ġt zzz"], r"merge 0 \('Ġt zzz'\) names \['zzz'\], which \"vocab\" does not contain"),
    ("merges", ["a b c"], "merge 0 is 'a b c'; each merge must be two tokens"),
    ("special_tokens", ["<|endoftext|>"], "special_tokens must be a dict"),
    ("special_tokens", {"<|endoftext|>": -1}, "special token .* needs a non-negative int id"),
])
def test_damaged_bpe_files_name_the_damage(trained, tmp_path, field, value, message):
    data = json.loads(trained.save(tmp_path / "ok.json").read_text(encoding="utf-8"))
    data[field] = value
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=f"damaged 'bpe' tokenizer file: {message}.*tokenizer.save"):
        llmkit.tokenizers.load(tmp_path / "bad.json")


def test_damaged_char_files_name_the_damage(tmp_path):
    path = CharTokenizer.train("abc").save(tmp_path / "ok.json")
    for value, message in [("abc", '"chars" must be a list'), (["a", "bc"], "single characters"),
                           (["a", "a"], "must not repeat")]:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["chars"] = value
        (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=f"damaged 'char' tokenizer file: .*{message}"):
            llmkit.tokenizers.load(tmp_path / "bad.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["chars"]
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="has no 'chars' field"):
        llmkit.tokenizers.load(tmp_path / "bad.json")


def test_char_tokenizer_add_chars_keeps_old_ids(tmp_path):
    tokenizer = CharTokenizer.train("the cat sat", [ENDOFTEXT])
    old = tokenizer.encode("the cat")
    added = tokenizer.add_chars("Who sat? the cat!")
    assert added == {"!": 8, "?": 9, "W": 10, "o": 11}  # sorted, after <|endoftext|> (7)
    assert tokenizer.add_chars("cat?") == {}  # nothing new
    assert tokenizer.encode("the cat") == old
    specials = tokenizer.add_special_tokens(["<|pad|>"])
    assert specials == {"<|pad|>": 12} and tokenizer.vocab_size == 13
    text = "Who? the cat!"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    loaded = llmkit.tokenizers.load(tokenizer.save(tmp_path / "char.json"))
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.vocab_size == 13
    decoder = loaded.stream_decoder()
    assert "".join(decoder.push(i) for i in loaded.encode(text)) == text
