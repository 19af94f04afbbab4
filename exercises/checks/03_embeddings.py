"""The checks of exercise notebook 03 (embeddings): instant and hidden cases.

Each task asks for a step past lesson 03's code. Every expected value is computed before the
learner's function runs, from PyTorch's own ops, llmkit's finished pieces or a plainer
computation:

    one_hot (a padding id)          torch.nn.functional.one_hot, padding rows zeroed
    embed (from position `start`)   torch.nn.functional.embedding + rows start..start+T-1
    sinusoidal_table (split halves) llmkit.model.embeddings.sinusoidal_positions, its rows
                                    picked by position and its columns regrouped
    cosine_similarity_matrix(a, b)  torch.nn.functional.cosine_similarity, broadcast
    analogy                         float64 cosines against b - a + c, sorted
    pca (k directions, stretch)     llmkit.viz.embeddings.pca (its sign rule) for the
                                    coordinates; eigenvalues of the covariance
                                    (torch.linalg.eigvalsh) for the explained fractions

A task earns its points only when every hidden case passes, so every hidden case is one the
usual slip fails: every sinusoidal case has two or more pairs of columns and positions past
0 (a wrong exponent shows there, not at position 0 or in a table two columns wide); every
embedding case but one starts past position 0; every cosine case has two different sets,
and most have a zero vector; every analogy has long vectors that win on dot products, and
the query words among the closest to the target.

While a task runs, the finished piece it asks for is off limits; for `embed`, so is every
lookup by index (`table[ids]`, `index_select`, `gather`, `take`, `F.embedding`), caught at
the operator, since the task is to see the lookup as a matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_sequences,
                                     compare_tensors, describe_type)
from llmkit.grading.exercise import random_int as _int
from llmkit.model.embeddings import sinusoidal_positions

SETUP = "import torch\nfrom llmkit.grading import check\n"

LOOKUPS = ("torch.nn.functional.embedding", "torch.nn.Embedding", "torch.nn.EmbeddingBag",
           "torch.nn.functional.embedding_bag", "llmkit.model.GPT", "llmkit.model.gpt.GPT")
# Every way to read rows by index, caught at the operator whatever Python route reached it
# (`W[ids]` is aten.index; slices `W[a:b]` and single rows `W[3]` are other operators).
LOOKUP_OPS = ("embedding", "_embedding_bag", "_embedding_bag_forward_only", "index",
              "index_select", "gather", "take")
SINUSOIDS = ("llmkit.model.sinusoidal_positions", "llmkit.model.embeddings")
COSINES = ("torch.nn.functional.cosine_similarity", "torch.cosine_similarity",
           "torch.nn.CosineSimilarity", "torch.nn.functional.normalize")
NEIGHBOURS = ("llmkit.viz.nearest_neighbours", "llmkit.viz.embeddings",
              "llmkit.viz.EmbeddingsView")
PCAS = ("torch.pca_lowrank", "torch.svd_lowrank", "llmkit.viz.pca", "llmkit.viz.embeddings",
        "sklearn.decomposition.PCA")


def reference_pca(vectors, n_components):
    # Imported here: llmkit.viz needs plotly, which the instant check must not.
    from llmkit.viz.embeddings import pca
    return pca(vectors, n_components)


def _vectors(generator, n, d) -> torch.Tensor:
    return torch.randn(n, d, generator=generator)


# --- 1. one-hot with a padding id -----------------------------------------------------------

def _one_hot_reference(ids, vocab_size, pad_id):
    expected = F.one_hot(ids, vocab_size).float()
    if pad_id is not None:
        expected[ids == pad_id] = 0.0
    return expected


def _one_hot_case(generator, shape, vocab_size, pad_id, note=""):
    ids = torch.randint(0, vocab_size, shape, generator=generator)
    if pad_id is not None and ids.numel() >= 2:
        ids.view(-1)[-1] = pad_id                    # padding is there, and not everywhere
        ids.view(-1)[0] = (pad_id + 1) % vocab_size
    return Case((ids, vocab_size, pad_id), _one_hot_reference(ids, vocab_size, pad_id), note)


def _one_hot_cases(generator, hidden):
    cases = [_one_hot_case(generator, (2, 5), 6, 0, "a (2, 5) batch, pad_id 0"),
             _one_hot_case(generator, (7,), 5, None, "1-D ids, no padding id"),
             _one_hot_case(generator, (2, 2, 3), 4, 3, "a 3-D batch, pad_id 3")]
    if not hidden:
        return cases
    for _ in range(3):
        vocab_size = _int(generator, 3, 12)
        shape = (_int(generator, 1, 4), _int(generator, 2, 9))
        cases.append(_one_hot_case(generator, shape, vocab_size, _int(generator, 0, vocab_size)))
    cases += [
        _one_hot_case(generator, (3, 4), 9, 0, "pad_id 0 (a real id: it must still be padding)"),
        _one_hot_case(generator, (), 7, None, "a single id (a 0-d tensor)"),
        _one_hot_case(generator, (0,), 4, 1, "no ids at all"),
        _one_hot_case(generator, (1, 6), 2, 1, "two ids in the vocabulary, one of them padding"),
    ]
    return cases


def _compare_one_hot(answer, case):
    ids, vocab_size, pad_id = case.args
    problem = compare_tensors(answer, case.expected, name="the one-hot tensor",
                              any_float_dtype=True, atol=0, rtol=0)
    if problem and pad_id is not None and isinstance(answer, torch.Tensor) \
            and answer.shape == case.expected.shape:
        padded = ids == pad_id
        if torch.equal(answer.double(), F.one_hot(ids, vocab_size).double()):
            problem += (f" The padding id ({pad_id}) has a 1 like any other id; its vector "
                        "should be all zeros.")
            if pad_id == 0:
                problem += " (0 is a real id: a test like `if pad_id:` skips it.)"
        elif padded.any() and answer[padded].abs().sum() == 0:
            problem += " The padding rows are right; look at the other ids."
    return problem


# --- 2. token + position embeddings from position `start` -----------------------------------

def _embed_case(generator, batch, seq, start, extra=0, note=""):
    vocab_size, d_model = _int(generator, 3, 20), _int(generator, 2, 9)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    token_table = _vectors(generator, vocab_size, d_model)
    position_table = _vectors(generator, start + seq + extra, d_model)
    expected = F.embedding(ids, token_table) + position_table[start:start + seq]
    return Case((ids, token_table, position_table, start), expected, note)


def _embed_cases(generator, hidden):
    cases = [_embed_case(generator, 2, 4, 0, 3, "start 0"),
             _embed_case(generator, 3, 3, 5, 0, "start 5, the table just long enough")]
    if not hidden:
        return cases
    for _ in range(3):
        cases.append(_embed_case(generator, _int(generator, 1, 4), _int(generator, 2, 8),
                                 _int(generator, 1, 12), _int(generator, 0, 5)))
    cases += [
        _embed_case(generator, 2, 1, 9, 2, "one token, at position 9 (a generation step)"),
        _embed_case(generator, 1, 6, 1, 6, "start 1"),
    ]
    return cases


def _compare_embed(answer, case):
    problem = compare_tensors(answer, case.expected, name="the embedded batch",
                              any_float_dtype=True, atol=1e-5, rtol=1e-5)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        ids, tokens, positions, start = case.args
        seq = ids.shape[1]
        got, looked_up = answer.double(), F.embedding(ids, tokens).double()
        if torch.allclose(got, looked_up, atol=1e-5):
            problem += " It equals the token embeddings alone: add the position vectors."
        elif start and torch.allclose(got, looked_up + positions[:seq].double(), atol=1e-5):
            problem += (f" The positions used are 0..{seq - 1}; these tokens sit at "
                        f"{start}..{start + seq - 1}.")
        elif len(positions) > start + seq and torch.allclose(
                got, looked_up + positions[start + 1:start + seq + 1].double(), atol=1e-5):
            problem += " The positions are off by one: the first token sits at `start` itself."
    return problem


# --- 3. the sinusoidal table, in split halves, at any positions --------------------------

def _split_halves(positions, d_model, base):
    """Rows `positions` of the lesson's (interleaved) table, with its sine columns 0, 2, 4, ...
    moved to the first half and its cosine columns 1, 3, 5, ... to the second."""
    interleaved = sinusoidal_positions(int(positions.max()) + 1, d_model, base)[positions]
    return torch.cat([interleaved[:, 0::2], interleaved[:, 1::2]], dim=1)


def _sinusoid_case(positions, d_model, base=10000.0, note=""):
    positions = torch.as_tensor(positions, dtype=torch.long)
    return Case((positions, d_model, base), _split_halves(positions, d_model, base), note)


def _sinusoid_cases(generator, hidden):
    cases = [_sinusoid_case(torch.arange(6), 8, note="positions 0..5, d_model 8"),
             _sinusoid_case(torch.arange(20, 23), 6, 100.0,
                            "positions 20..22 (a continuation), d_model 6, base 100"),
             _sinusoid_case(torch.tensor([9, 2, 9, 4]), 4, note="positions in no order, "
                                                               "one repeated")]
    if not hidden:
        return cases
    for _ in range(3):
        start, length = _int(generator, 0, 40), _int(generator, 2, 12)
        cases.append(_sinusoid_case(torch.arange(start, start + length),
                                    2 * _int(generator, 2, 17),
                                    float(_int(generator, 50, 20000))))
    cases += [
        _sinusoid_case(torch.randperm(30, generator=generator)[:7], 10,
                       note="positions in no order, some skipped"),
        _sinusoid_case(torch.tensor([3, 3, 1]), 4, 10.0, "a repeated position, base 10"),
        _sinusoid_case(torch.tensor([1000, 1]), 16, note="a far position (1000)"),
    ]
    return cases


def _compare_sinusoid(answer, case):
    positions, d_model, base = case.args
    problem = compare_tensors(answer, case.expected, name="the table", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if not problem or not isinstance(answer, torch.Tensor) or answer.shape != case.expected.shape:
        return problem
    got, half = answer.double(), d_model // 2
    interleaved = sinusoidal_positions(int(positions.max()) + 1, d_model, base)[positions]
    if torch.allclose(got, interleaved.double(), atol=1e-4):
        return problem + (" That is the lesson's interleaved layout (sine, cosine, sine, ...); "
                          "this task puts every sine first, then every cosine.")
    swapped = torch.cat([case.expected[:, half:], case.expected[:, :half]], dim=1)
    if torch.allclose(got, swapped.double(), atol=1e-4):
        return problem + " The halves are swapped: the sines come first."
    at_arange = _split_halves(torch.arange(len(positions)), d_model, base)
    if torch.allclose(got, at_arange.double(), atol=1e-4):
        return problem + (" These are the rows of positions 0, 1, 2, ...; row j is for "
                          "position positions[j].")
    if torch.allclose(got[:, 0], case.expected[:, 0].double(), atol=1e-4):
        problem += (" The first pair of columns is right and later ones are not: look at how "
                    "the frequency falls from one pair to the next (the exponent).")
    return problem


# --- 4. cosine similarity between two sets --------------------------------------------------

def _cosine_case(a, b, note=""):
    return Case((a, b), F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1), note)


def _with_zero_rows(vectors, rows):
    vectors = vectors.clone()
    vectors[list(rows)] = 0.0
    return vectors


def _cosine_cases(generator, hidden):
    cases = [_cosine_case(_vectors(generator, 3, 4), _vectors(generator, 5, 4), "3 rows against 5"),
             _cosine_case(_with_zero_rows(_vectors(generator, 4, 3), [2]),
                          _with_zero_rows(_vectors(generator, 4, 3), [0]),
                          "4 against 4, a zero vector in each")]
    if not hidden:
        return cases
    for _ in range(3):
        n, m, d = _int(generator, 2, 9), _int(generator, 2, 9), _int(generator, 2, 12)
        a, b = _vectors(generator, n, d), _vectors(generator, m + (m == n), d)
        cases.append(_cosine_case(_with_zero_rows(a, [_int(generator, 0, n)]), b))
    lengths = torch.tensor([[0.01], [1.0], [100.0], [3.0], [7.0]])
    pair = _vectors(generator, 1, 6)
    cases += [
        _cosine_case(_vectors(generator, 5, 4) * lengths,
                     _vectors(generator, 5, 4) * lengths.flip(0),
                     "5 against 5, rows of very different lengths (0.01 to 100)"),
        _cosine_case(torch.cat([pair, -2 * pair, torch.zeros(1, 6)]), 3 * pair,
                     "the same or the opposite direction, and a zero vector"),
        _cosine_case(torch.tensor([[2.0], [-1.0], [0.0]]), torch.tensor([[0.5], [-3.0]]),
                     "1-dimensional vectors"),
    ]
    return cases


def _compare_cosine(answer, case):
    a, b = case.args
    problem = compare_tensors(answer, case.expected, name="the similarity matrix",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        if torch.isnan(answer).any():
            problem += (" Some entries are nan: a zero vector has length 0, and 0 / 0 is nan; "
                        "its cosine with anything is 0.")
        elif torch.allclose(answer.double(), (a @ b.T).double(), atol=1e-5, rtol=1e-4):
            problem += " Those are plain dot products: divide by the two vectors' lengths."
    return problem


# --- 5. an analogy: the nearest neighbours of b - a + c -------------------------------------

def _analogy_ranking(vectors, a, b, c):
    """Every row but a, b and c, most similar to b - a + c first, with the similarities."""
    vectors = vectors.double()
    target = vectors[b] - vectors[a] + vectors[c]
    similarity = F.cosine_similarity(vectors, target[None], dim=1)
    similarity[[a, b, c]] = -float("inf")
    order = similarity.argsort(descending=True)
    return order[:-3], similarity[order[:-3]]


def _analogy_case(generator, n, d, k, note=""):
    while True:
        lengths = torch.exp(torch.randn(n, 1, generator=generator) * 1.2)
        vectors = _vectors(generator, n, d) * lengths      # lengths from about 0.05 to 20
        a, b, c, answer = torch.randperm(n, generator=generator)[:4].tolist()
        offset = vectors[b] - vectors[a]
        vectors[answer] = (vectors[c] + offset) * 0.3 + 0.2 * _vectors(generator, 1, d)[0]
        long_row = (answer + 1 + _int(generator, 0, n - 1)) % n
        if long_row not in (a, b, c):                       # wins on dot products alone
            vectors[long_row] = (vectors[c] + offset + _vectors(generator, 1, d)[0] * 4) * 30
        order, similarity = _analogy_ranking(vectors, a, b, c)
        top = similarity[:k + 1]
        if len(top) > 1 and (top[:-1] - top[1:]).min() < 1e-3:
            continue                                        # too close to call in float32
        expected = order[:k].tolist()
        return Case((vectors, a, b, c, k), expected, note)


def _analogy_cases(generator, hidden):
    cases = [_analogy_case(generator, 10, 6, 3, "10 vectors, k = 3"),
             _analogy_case(generator, 7, 5, 4, "7 vectors, k = n - 3 (every other row)")]
    if not hidden:
        return cases
    for _ in range(3):
        n = _int(generator, 8, 30)
        cases.append(_analogy_case(generator, n, _int(generator, 3, 12), _int(generator, 1, 6)))
    cases += [_analogy_case(generator, 12, 8, 1, "k = 1"),
              _analogy_case(generator, 6, 4, 3, "k = n - 3")]
    return cases


def _compare_analogy(answer, case):
    vectors, a, b, c, k = case.args
    if isinstance(answer, torch.Tensor) and answer.dim() == 1:
        answer = answer.tolist()
    if isinstance(answer, tuple):
        answer = list(answer)
    if not isinstance(answer, list):
        return f"return a list of k row numbers, but it returned {describe_type(answer)}."
    if any(isinstance(i, bool) or not isinstance(i, int) for i in answer):
        return "every row number should be a Python int (use .tolist() or int())."
    inputs = [i for i in (a, b, c) if i in answer]
    if inputs:
        return (f"the list contains row {inputs[0]}, one of the three words of the question "
                f"(a = {a}, b = {b}, c = {c}): leave all three out.")
    if len(answer) != k:
        return f"asked for k = {k} rows, got {len(answer)}."
    if sorted(answer) == sorted(case.expected) and answer != case.expected:
        return "these are the right rows, but not best first (most similar first)."
    problem = compare_sequences(answer, case.expected, name="the answer")
    if problem:
        target = (vectors[b] - vectors[a] + vectors[c]).double()
        by_dot = (vectors.double() @ target)
        by_dot[[a, b, c]] = -float("inf")
        backwards = vectors[a] - vectors[b] + vectors[c]
        by_backwards = F.cosine_similarity(vectors.double(), backwards.double()[None], dim=1)
        by_backwards[[a, b, c]] = -float("inf")
        if answer == by_dot.argsort(descending=True)[:k].tolist():
            problem += (" That is the ranking by dot product, which favours long vectors; "
                        "rank by direction (cosine).")
        elif answer == by_backwards.argsort(descending=True)[:k].tolist():
            problem += (" That answers 'b is to a as c is to ?': the move to add to c is the "
                        "one from a to b.")
    return problem


# --- 6. PCA to k dimensions, with the explained variance (stretch) --------------------------

def _spread_vectors(generator, n, d, offset_scale=5.0):
    """n points in d dims whose spreads along random perpendicular directions are far apart."""
    scales = torch.tensor([8.0, 4.0, 2.0, 1.0] + [0.3] * d)[:d]
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    offset = torch.randn(d, generator=generator) * offset_scale
    return (torch.randn(n, d, generator=generator) * scales) @ rotation.T + offset


def _explained(vectors, k):
    centred = vectors.double() - vectors.double().mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred).flip(0)   # largest first
    return (eigenvalues[:k] / eigenvalues.sum()).clamp_min(0.0)


def _pca_case(generator, n, d, k, offset_scale=5.0, note=""):
    while True:
        vectors = _spread_vectors(generator, n, d, offset_scale)
        coords = reference_pca(vectors, k).double()
        magnitudes = coords.abs().sort(dim=0, descending=True).values
        if n > 1 and (magnitudes[0] - magnitudes[1]).min() < 1e-2 * magnitudes[0].min():
            continue     # the sign rule would hang on two nearly equal coordinates
        return Case((vectors, k), (coords, _explained(vectors, k)), note)


def _pca_cases(generator, hidden):
    cases = [_pca_case(generator, 30, 5, 2, note="30 points in 5 dimensions, k = 2"),
             _pca_case(generator, 25, 4, 3, offset_scale=300.0,
                       note="k = 3, points far from the origin")]
    if not hidden:
        return cases
    for _ in range(2):
        d = _int(generator, 3, 10)
        k = _int(generator, 2, min(d, 4) + 1)
        cases.append(_pca_case(generator, _int(generator, 20, 60), d, k))
    cases += [
        _pca_case(generator, 40, 6, 1, offset_scale=1000.0,
                  note="k = 1, points far from the origin"),
        _pca_case(generator, 20, 3, 3, note="k = d (every direction)"),
    ]
    return cases


def _signs_aligned(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    agree = (got * expected).sum(0)
    return got * torch.where(agree < 0, -1.0, 1.0).to(got.dtype)


def _compare_pca(answer, case):
    vectors, k = case.args
    expected_coords, expected_explained = case.expected
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("pca should return a pair (coordinates, explained), but it returned "
                f"{describe_type(answer)}.")
    coords, explained = answer
    if not isinstance(coords, torch.Tensor):
        return f"the coordinates should be a torch tensor, but they are {describe_type(coords)}."
    if coords.shape != expected_coords.shape:
        return (f"the coordinates have shape {tuple(coords.shape)}, expected "
                f"{tuple(expected_coords.shape)}.")
    if not coords.is_floating_point():
        return f"the coordinates have dtype {coords.dtype}; they should be floating-point numbers."
    got = coords.double()
    scale = max(1.0, expected_coords.abs().max().item())
    problem = compare_tensors(got, expected_coords, name="the coordinates",
                              atol=1e-4 * scale, rtol=1e-3)
    if problem:
        aligned = _signs_aligned(got, expected_coords)
        if torch.allclose(aligned, expected_coords, atol=1e-4 * scale, rtol=1e-3):
            return problem + (" Up to sign they are right: flip each direction so that the "
                              "point farthest along it has a positive coordinate.")
        if not torch.allclose(got.mean(0), torch.zeros(k, dtype=got.dtype), atol=1e-3 * scale):
            return problem + " The projected points should be centred: each column's mean is 0."
        return problem
    problem = compare_tensors(explained, expected_explained, name="the explained fractions",
                              any_float_dtype=True, atol=1e-4, rtol=1e-3)
    if (problem and isinstance(explained, torch.Tensor)
            and explained.shape == expected_explained.shape):
        got = explained.double()
        if k < vectors.shape[1] and torch.isclose(got.sum(), torch.tensor(1.0, dtype=got.dtype)):
            problem += (" They add up to 1, but the k directions kept do not hold all the "
                        "variance: divide by the total over every direction.")
        elif (got - expected_explained).abs().max() > 1e-2 and (got > expected_explained).all():
            problem += (" Each is too large: the variance along a direction grows with the "
                        "square of its singular value.")
    return problem


EXERCISES = [
    Exercise("embed.one_hot", "one_hot", 1, "One-hot vectors with a padding id",
             _one_hot_cases, _compare_one_hot, forbidden=("torch.nn.functional.one_hot",),
             hint="Padding is a real id of the vocabulary that must come out as nothing at all, "
                  "and 0 is a common choice for it: test for 'no padding id' by comparing with "
                  "None, never by truth value. The result has one more dimension than ids."),
    Exercise("embed.embed", "embed", 2, "Token plus position embeddings, from any position",
             _embed_cases, _compare_embed, forbidden=LOOKUPS, forbidden_ops=LOOKUP_OPS,
             hint="The token part is a one-hot batch times the token table (no indexing). The "
                  "first token of the batch sits at position `start`, not 0: the position rows "
                  "run from start to start + T - 1, and a slice of the table broadcasts over "
                  "the batch."),
    Exercise("embed.sinusoidal", "sinusoidal_table", 2,
             "The sinusoidal table in split halves, at any positions",
             _sinusoid_cases, _compare_sinusoid, forbidden=SINUSOIDS,
             hint="The frequencies are the lesson's, one per pair i = 0 .. d/2 - 1, falling as "
                  "base to the power -2i/d; only where the columns go changes. A wrong exponent "
                  "is invisible at position 0 and in the first pair, so test a later position "
                  "in the last column against the formula by hand."),
    Exercise("embed.cosine", "cosine_similarity_matrix", 2, "Cosine similarity between two sets",
             _cosine_cases, _compare_cosine, forbidden=COSINES,
             forbidden_ops=("_cdist_forward",),
             hint="Entry [i, j] divides by the length of a's row i times the length of b's row "
                  "j: one length per row and per column, not one per pair of equal index. A "
                  "zero vector has no direction; keep its row or column at 0 without ever "
                  "dividing 0 by 0."),
    Exercise("embed.neighbours", "analogy", 2, "An analogy: the neighbours of b - a + c",
             _analogy_cases, _compare_analogy, forbidden=NEIGHBOURS,
             hint="The move from a to b is b - a; apply it to c. Rank by direction, not by dot "
                  "product (long vectors would win whatever they mean), and the three words of "
                  "the question are never the answer, though they sit close to the target."),
    Exercise("embed.pca", "pca", 3, "Stretch: PCA to k dimensions, and what it keeps",
             _pca_cases, _compare_pca, forbidden=PCAS,
             hint="Centre the points first. The directions of largest spread are the right "
                  "singular vectors of the centred matrix (or the eigenvectors of its covariance), "
                  "largest first; the variance along one grows with the square of its singular "
                  "value, and the total is over every direction, not only the k kept."),
]

ASSIGNMENT = Assignment("03_embeddings", "Exercises 03: embeddings", SETUP, EXERCISES)
