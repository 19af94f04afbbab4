"""The checks of exercise notebook 03 (embeddings): instant and hidden cases.

Every expected value comes from PyTorch's own ops or from `llmkit`, computed before the
learner's function runs:

    one_hot                   torch.nn.functional.one_hot
    embed                     torch.nn.functional.embedding + the first T position rows
    sinusoidal_table          llmkit.model.embeddings.sinusoidal_positions
    cosine_similarity_matrix  torch.nn.functional.cosine_similarity, broadcast over pairs
    nearest_neighbours        llmkit.viz.embeddings.nearest_neighbours
    pca_2d (stretch)          llmkit.viz.embeddings.pca

While the learner's function runs, each of these finished pieces is off limits. PCA fixes
each component only up to its sign, so `pca_2d` is compared column by column after
flipping the learner's column to agree with the reference; the cases are drawn with well
separated spreads, so the two leading directions are well defined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.model.embeddings import sinusoidal_positions
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_sequences, compare_tensors,
                       describe_type)
from llmkit.grading.exercise import random_int as _int

SETUP = "import torch\nfrom llmkit.grading import check\n"

LOOKUPS = ("torch.nn.functional.embedding", "torch.nn.Embedding", "llmkit.model.GPT",
           "llmkit.model.gpt.GPT")
SINUSOIDS = ("llmkit.model.sinusoidal_positions", "llmkit.model.embeddings.sinusoidal_positions",
             "llmkit.model.embeddings.SinusoidalPositionEmbedding")
COSINES = ("torch.nn.functional.cosine_similarity", "torch.cosine_similarity",
           "torch.nn.CosineSimilarity", "torch.nn.functional.normalize")
NEIGHBOURS = ("llmkit.viz.nearest_neighbours", "llmkit.viz.embeddings.nearest_neighbours",
              "llmkit.viz.embeddings", "llmkit.viz.EmbeddingsView",
              "llmkit.viz.embeddings.EmbeddingsView")
PCAS = ("torch.pca_lowrank", "llmkit.viz.pca", "llmkit.viz.embeddings.pca",
        "sklearn.decomposition.PCA")


def reference_neighbours(vectors, index, k):
    # Imported here: llmkit.viz needs plotly, which the instant check must not.
    from llmkit.viz.embeddings import nearest_neighbours
    return nearest_neighbours(vectors, index, k)


def reference_pca(vectors, n_components):
    from llmkit.viz.embeddings import pca
    return pca(vectors, n_components)


def _vectors(generator, n, d) -> torch.Tensor:
    return torch.randn(n, d, generator=generator)


# --- 1. one-hot -----------------------------------------------------------------------

def _one_hot_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        vocab_size = _int(generator, 2, 12)
        shape = (_int(generator, 1, 4), _int(generator, 1, 8))
        ids = torch.randint(0, vocab_size, shape, generator=generator)
        cases.append(Case((ids, vocab_size), F.one_hot(ids, vocab_size).float()))
    if hidden:
        edge = [
            (torch.tensor([3, 0, 3]), 5, "a 1-D list of ids"),
            (torch.zeros(2, 3, 4, dtype=torch.long), 3, "a 3-D batch of ids, all 0"),
            (torch.tensor([1]), 9, "a vocabulary much larger than the ids used"),
            (torch.zeros(0, dtype=torch.long), 4, "no ids at all"),
        ]
        cases += [Case((ids, size), F.one_hot(ids, size).float(), note)
                  for ids, size, note in edge]
    return cases


def _compare_one_hot(answer, case):
    return compare_tensors(answer, case.expected, name="the one-hot tensor",
                           any_float_dtype=True, atol=0, rtol=0)


# --- 2. token + position embeddings as a matmul -----------------------------------------

def _embed_case(generator, batch, seq, extra_positions=None, note=""):
    vocab_size, d_model = _int(generator, 3, 20), _int(generator, 2, 9)
    if extra_positions is None:
        extra_positions = _int(generator, 0, 5)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    token_table = _vectors(generator, vocab_size, d_model)
    position_table = _vectors(generator, seq + extra_positions, d_model)
    expected = F.embedding(ids, token_table) + position_table[:seq]
    return Case((ids, token_table, position_table), expected, note)


def _embed_cases(generator, hidden):
    cases = [_embed_case(generator, _int(generator, 1, 4), _int(generator, 2, 10))
             for _ in range(4 if hidden else 2)]
    if hidden:
        cases.append(_embed_case(generator, 1, 1, note="one sequence of one token"))
        cases.append(_embed_case(generator, 2, 6, 0, "a sequence as long as the position table"))
        cases.append(_embed_case(generator, 3, 4, 6, "a position table much longer than the "
                                                     "sequence"))
    return cases


def _compare_embed(answer, case):
    problem = compare_tensors(answer, case.expected, name="the embedded batch",
                              any_float_dtype=True, atol=1e-5, rtol=1e-5)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        ids, tokens, _ = case.args
        if torch.allclose(answer.double(), F.embedding(ids, tokens).double(), atol=1e-5):
            problem += " It equals the token embeddings alone: add the position vectors."
    return problem


# --- 3. the sinusoidal position table ------------------------------------------------------

def _sinusoid_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 1):
        context_length, d_model = _int(generator, 2, 40), 2 * _int(generator, 1, 17)
        cases.append(Case((context_length, d_model),
                          sinusoidal_positions(context_length, d_model)))
    base = float(_int(generator, 50, 2000))  # a learner's table must use the base it is given
    cases.append(Case((16, 8, base), sinusoidal_positions(16, 8, base), f"base = {base:g}"))
    if hidden:
        for args, note in (((1, 6), "one position (context_length = 1)"),
                           ((8, 2), "d_model = 2 (one sine, one cosine)"),
                           ((12, 10, 100.0), "base = 100")):
            cases.append(Case(args, sinusoidal_positions(*args), note))
    return cases


def _compare_sinusoid(answer, case):
    problem = compare_tensors(answer, case.expected, name="the table", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if (problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape
            and case.expected.shape[1] >= 2):
        swapped = case.expected.view(case.expected.shape[0], -1, 2).flip(-1).reshape(
            case.expected.shape)
        if torch.allclose(answer.double(), swapped.double(), atol=1e-4):
            problem += " Sines and cosines are swapped: even columns hold the sines."
    return problem


# --- 4. cosine similarity ---------------------------------------------------------------

def _cosine_reference(vectors):
    return F.cosine_similarity(vectors[:, None, :], vectors[None, :, :], dim=-1)


def _cosine_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        vectors = _vectors(generator, _int(generator, 2, 12), _int(generator, 2, 16))
        cases.append(Case((vectors,), _cosine_reference(vectors)))
    if hidden:
        scaled = _vectors(generator, 5, 4) * torch.tensor([[0.01], [1.0], [100.0], [3.0], [7.0]])
        pair = _vectors(generator, 1, 6)
        edge = [
            (scaled, "rows of very different lengths (0.01 to 100)"),
            (torch.cat([pair, -2 * pair, 3 * pair]), "vectors pointing the same or opposite way"),
            (_vectors(generator, 1, 5), "a single vector"),
            (torch.tensor([[2.0], [-1.0], [0.5]]), "1-dimensional vectors"),
        ]
        cases += [Case((vectors,), _cosine_reference(vectors), note) for vectors, note in edge]
    return cases


def _compare_cosine(answer, case):
    problem = compare_tensors(answer, case.expected, name="the similarity matrix",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        vectors = case.args[0].double()
        if torch.allclose(answer.double(), vectors @ vectors.T, atol=1e-5, rtol=1e-4):
            problem += " Those are plain dot products: divide by the two vectors' lengths."
    return problem


# --- 5. nearest neighbours ------------------------------------------------------------------

def _separated(vectors, index, k) -> bool:
    """Whether the k + 1 best similarities are far enough apart that rounding cannot swap them."""
    similarity = _cosine_reference(vectors)[index].double()
    similarity[index] = -2.0
    top = similarity.topk(min(k + 1, len(similarity) - 1)).values
    return bool(len(top) < 2 or (top[:-1] - top[1:]).min() > 1e-4)


def _neighbour_case(generator, n, d, k, note="", duplicate=False):
    while True:
        vectors = _vectors(generator, n, d)
        index = _int(generator, 0, n)
        if duplicate:  # an exact copy of the query: it must come first, the query not at all
            vectors[(index + 1 + _int(generator, 0, n - 1)) % n] = vectors[index]
        if _separated(vectors, index, k):
            expected = [i for i, _ in reference_neighbours(vectors, index, k)]
            return Case((vectors, index, k), expected, note)


def _neighbour_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        n = _int(generator, 6, 30)
        cases.append(_neighbour_case(generator, n, _int(generator, 2, 12),
                                     _int(generator, 1, 6)))
    if hidden:
        cases.append(_neighbour_case(generator, 8, 5, 3, "an exact copy of the query vector "
                                     "among the others", duplicate=True))
        cases.append(_neighbour_case(generator, 6, 4, 5, "k = n - 1 (every other vector)"))
        cases.append(_neighbour_case(generator, 12, 6, 1, "k = 1"))
    return cases


def _compare_neighbours(answer, case):
    vectors, index, k = case.args
    if isinstance(answer, torch.Tensor) and answer.dim() == 1:
        answer = answer.tolist()
    if isinstance(answer, tuple):
        answer = list(answer)
    if not isinstance(answer, list):
        return f"return a list of k row numbers, but it returned {describe_type(answer)}."
    if any(isinstance(i, bool) or not isinstance(i, int) for i in answer):
        return "every neighbour should be a Python int (a row number; use .tolist() or int())."
    if index in answer:
        return (f"the list contains the query row {index} itself: leave it out, even though "
                "it is the most similar to itself.")
    if len(answer) != k:
        return f"asked for k = {k} neighbours, got {len(answer)}."
    if sorted(answer) == sorted(case.expected) and answer != case.expected:
        return "these are the right neighbours, but not best first (most similar first)."
    return compare_sequences(answer, case.expected, name="the neighbours")


# --- 6. PCA to 2D (stretch) -----------------------------------------------------------------

def _spread_vectors(generator, n, d):
    """n points in d dims whose spread along two random directions is clearly the largest."""
    scales = torch.tensor([6.0, 3.0] + [0.6] * (d - 2))[:d]
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    offset = torch.randn(d, generator=generator) * 5
    return (torch.randn(n, d, generator=generator) * scales) @ rotation.T + offset


def _pca_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 2):
        vectors = _spread_vectors(generator, _int(generator, 20, 60), _int(generator, 3, 10))
        cases.append(Case((vectors,), reference_pca(vectors, 2)))
    if hidden:
        far = _spread_vectors(generator, 30, 5) + 1000.0
        cases.append(Case((far,), reference_pca(far, 2),
                          "points far from the origin (centre them first)"))
        flat = _spread_vectors(generator, 25, 2)
        cases.append(Case((flat,), reference_pca(flat, 2), "2-dimensional points"))
    return cases


def _signs_aligned(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """got with each column's sign flipped to agree with expected's (PCA leaves it open)."""
    agree = (got * expected).sum(0)
    return got * torch.where(agree < 0, -1.0, 1.0).to(got.dtype)


def _compare_pca(answer, case):
    expected = case.expected.double()
    if not isinstance(answer, torch.Tensor):
        return f"the projection should be a torch tensor, but it is {describe_type(answer)}."
    if answer.shape != expected.shape:
        return f"the projection has shape {tuple(answer.shape)}, expected {tuple(expected.shape)}."
    if not answer.is_floating_point():
        return f"the projection has dtype {answer.dtype}; it should hold floating-point numbers."
    got = answer.double()
    scale = max(1.0, expected.abs().max().item())
    problem = compare_tensors(_signs_aligned(got, expected), expected,
                              name="the projection (signs aside)", atol=1e-4 * scale, rtol=1e-3)
    if problem is None:
        return None
    if torch.allclose(_signs_aligned(got[:, [1, 0]], expected), expected, atol=1e-3 * scale):
        return ("the two columns are swapped: the first column is the direction of the "
                "largest spread (the largest singular value).")
    if not torch.allclose(got.mean(0), torch.zeros(2, dtype=got.dtype), atol=1e-3 * scale):
        problem += " The projected points should be centred: each column's mean is 0."
    return problem


EXERCISES = [
    Exercise("embed.one_hot", "one_hot", 1, "One-hot vectors",
             _one_hot_cases, _compare_one_hot, forbidden=("torch.nn.functional.one_hot",),
             hint="The result has one more dimension than ids, of size vocab_size, and must work "
                  "for ids of any shape (a (B, T) batch too): put a 1.0 where the last index "
                  "equals the id, 0.0 elsewhere (broadcasting against torch.arange helps)."),
    Exercise("embed.embed", "embed", 2, "Token plus position embeddings",
             _embed_cases, _compare_embed, forbidden=LOOKUPS, forbidden_ops=("embedding",),
             hint="one_hot(ids, V) has shape (B, T, V); matmul with the (V, d) token table gives "
                  "(B, T, d). Then add the first T rows of the position table: a (T, d) tensor "
                  "broadcasts over the batch."),
    Exercise("embed.sinusoidal", "sinusoidal_table", 2, "The sinusoidal position table",
             _sinusoid_cases, _compare_sinusoid, forbidden=SINUSOIDS,
             hint="Make a (T, 1) column of positions and a (d/2,) row of frequencies "
                  "base ** (-2i / d); their product is every angle. Fill the even columns with "
                  "the sines ([:, 0::2]) and the odd ones with the cosines ([:, 1::2])."),
    Exercise("embed.cosine", "cosine_similarity_matrix", 2, "Cosine similarity of every pair",
             _cosine_cases, _compare_cosine, forbidden=COSINES,
             forbidden_ops=("_cdist_forward",),
             hint="Divide each row by its length (torch.linalg.vector_norm(..., dim=1, "
                  "keepdim=True)); then one matrix product of the unit rows with their "
                  "transpose gives every pair's cosine."),
    Exercise("embed.neighbours", "nearest_neighbours", 2, "Nearest neighbours",
             _neighbour_cases, _compare_neighbours, forbidden=NEIGHBOURS,
             hint="Take row `index` of the cosine matrix, set the query's own entry to "
                  "-infinity so it cannot win, and keep the k largest with torch.topk."),
    Exercise("embed.pca", "pca_2d", 3, "Stretch: PCA to two dimensions",
             _pca_cases, _compare_pca, forbidden=PCAS,
             hint="Subtract the mean of each column; torch.linalg.svd(centred, "
                  "full_matrices=False) gives U, S, Vh; the coordinates are centred @ Vh[:2].T "
                  "(the same as U[:, :2] * S[:2])."),
]

ASSIGNMENT = Assignment("03_embeddings", "Exercises 03: embeddings", SETUP, EXERCISES)
