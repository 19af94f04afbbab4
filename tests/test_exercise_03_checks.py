"""Exercise notebook 03's checks: the reference solutions pass every case; lesson 03's own code,
pasted as the answer, fails a hidden case of every task; the usual wrong solutions fail a hidden
case and the instant check; and each route the notebook rules out is reported as forbidden.

The solutions, the lesson's code and the slips are written here by hand.
"""

import pytest
import torch
import torch.nn.functional as F

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["03_embeddings"].exercises}
SEEDS = [0, 1, 2]


# --- the reference solutions ------------------------------------------------------------------

def one_hot(ids, vocab_size, pad_id=None):
    out = (ids[..., None] == torch.arange(vocab_size)).float()
    if pad_id is not None:
        out = out * (ids != pad_id)[..., None]
    return out


def embed(ids, token_table, position_table, start):
    tokens = one_hot(ids, token_table.shape[0]).to(token_table.dtype) @ token_table
    return tokens + position_table[start:start + ids.shape[1]]


def sinusoidal_table(positions, d_model, base=10000.0):
    frequencies = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = positions.double()[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def cosine_similarity_matrix(a, b):
    a_unit = a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(1e-12)
    b_unit = b / torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(1e-12)
    return a_unit @ b_unit.T


def analogy(vectors, a, b, c, k):
    target = vectors[b] - vectors[a] + vectors[c]
    similarity = cosine_similarity_matrix(vectors, target[None])[:, 0]
    similarity[[a, b, c]] = -float("inf")
    return similarity.topk(k).indices.tolist()


def pca(vectors, k):
    centred = vectors.double() - vectors.double().mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ vh[:k].T
    biggest = coords.abs().argmax(dim=0)
    coords = coords * torch.sign(coords[biggest, torch.arange(k)])
    return coords.float(), (s[:k] ** 2 / (s ** 2).sum()).float()


RIGHT = {"embed.one_hot": one_hot, "embed.embed": embed, "embed.sinusoidal": sinusoidal_table,
         "embed.cosine": cosine_similarity_matrix, "embed.neighbours": analogy, "embed.pca": pca}


# --- lesson 03's own code, pasted into each task (the lesson shows no PCA) ---------------------

def lesson_one_hot(ids, vocab_size):
    return (ids[..., None] == torch.arange(vocab_size, device=ids.device)).float()


def lesson_one_hot_adapted(ids, vocab_size, pad_id=None):       # the new argument ignored
    return lesson_one_hot(ids, vocab_size)


def lesson_embed(ids, token_table, position_table, start):
    return lesson_one_hot(ids, token_table.shape[0]) @ token_table + position_table[:ids.shape[1]]


def lesson_sinusoidal_table(context_length, d_model, base=10000.0):
    positions = torch.arange(context_length, dtype=torch.float64)[:, None]
    frequencies = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = positions * frequencies
    table = torch.zeros(context_length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


def lesson_sinusoidal_adapted(positions, d_model, base=10000.0):   # rows picked by position
    return lesson_sinusoidal_table(int(positions.max()) + 1, d_model, base)[positions]


def lesson_cosine(vectors):
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return unit @ unit.T


def lesson_cosine_adapted(a, b):
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def lesson_nearest(vectors, index, k):
    similarity = lesson_cosine(vectors)[index].clone()
    similarity[index] = -float("inf")
    top = similarity.topk(k)
    return list(zip(top.indices.tolist(), top.values.tolist()))


def lesson_nearest_adapted(vectors, a, b, c, k):          # the neighbours of c
    return [row for row, _ in lesson_nearest(vectors, c, k)]


LESSON = [("embed.one_hot", lesson_one_hot), ("embed.one_hot", lesson_one_hot_adapted),
          ("embed.embed", lesson_embed),
          ("embed.sinusoidal", lesson_sinusoidal_table),
          ("embed.sinusoidal", lesson_sinusoidal_adapted),
          ("embed.cosine", lesson_cosine), ("embed.cosine", lesson_cosine_adapted),
          ("embed.neighbours", lesson_nearest), ("embed.neighbours", lesson_nearest_adapted)]


# --- the usual slips ------------------------------------------------------------------------

def one_hot_truthy_pad(ids, vocab_size, pad_id=None):
    out = (ids[..., None] == torch.arange(vocab_size)).float()
    if pad_id:                                              # skips pad_id 0
        out = out * (ids != pad_id)[..., None]
    return out


def embed_off_by_one(ids, token_table, position_table, start):
    tokens = one_hot(ids, token_table.shape[0]) @ token_table
    return tokens + position_table[start + 1:start + 1 + ids.shape[1]]


def sinusoidal_wrong_exponent(positions, d_model, base=10000.0):   # base^(-i/d), i = 0 .. d/2-1
    frequencies = base ** (-torch.arange(d_model // 2, dtype=torch.float64) / d_model)
    angles = positions.double()[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sinusoidal_from_zero(positions, d_model, base=10000.0):         # the values ignored
    return sinusoidal_table(torch.arange(len(positions)), d_model, base)


def cosine_norms_paired(a, b):          # one length per pair of equal index, not an outer product
    na, nb = a.norm(dim=1).clamp_min(1e-12), b.norm(dim=1).clamp_min(1e-12)
    return (a @ b.T) / (na * nb)


def cosine_dot(a, b):
    return a @ b.T


def analogy_keeps_inputs(vectors, a, b, c, k):
    target = vectors[b] - vectors[a] + vectors[c]
    return cosine_similarity_matrix(vectors, target[None])[:, 0].topk(k).indices.tolist()


def analogy_by_dot(vectors, a, b, c, k):
    similarity = vectors @ (vectors[b] - vectors[a] + vectors[c])
    similarity[[a, b, c]] = -float("inf")
    return similarity.topk(k).indices.tolist()


def analogy_backwards(vectors, a, b, c, k):
    return analogy(vectors, b, a, c, k)


def pca_uncentred(vectors, k):
    _, s, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
    coords = vectors.double() @ vh[:k].T
    biggest = coords.abs().argmax(dim=0)
    coords = coords * torch.sign(coords[biggest, torch.arange(k)])
    return coords.float(), (s[:k] ** 2 / (s ** 2).sum()).float()


def pca_ratio_of_kept(vectors, k):
    coords, _ = pca(vectors, k)
    centred = vectors.double() - vectors.double().mean(dim=0)
    s = torch.linalg.svdvals(centred)[:k]
    return coords, (s ** 2 / (s ** 2).sum()).float()


def pca_ratio_of_singular_values(vectors, k):
    coords, _ = pca(vectors, k)
    s = torch.linalg.svdvals(vectors.double() - vectors.double().mean(dim=0))
    return coords, (s[:k] / s.sum()).float()


SLIPS = [("embed.one_hot", one_hot_truthy_pad),
         ("embed.embed", embed_off_by_one),
         ("embed.sinusoidal", sinusoidal_wrong_exponent),
         ("embed.sinusoidal", sinusoidal_from_zero),
         ("embed.cosine", cosine_norms_paired),
         ("embed.cosine", cosine_dot),
         ("embed.neighbours", analogy_keeps_inputs),
         ("embed.neighbours", analogy_by_dot),
         ("embed.neighbours", analogy_backwards),
         ("embed.pca", pca_uncentred),
         ("embed.pca", pca_ratio_of_kept),
         ("embed.pca", pca_ratio_of_singular_values)]


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)
    assert ASSIGNMENTS["03_embeddings"].max_points == 12


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed),
                  hidden_cases(exercise, seed)):
        results = passed(exercise, RIGHT[exercise_id], cases)
        assert all(results), [case.note for case, ok in zip(cases, results) if not ok]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, pasted", LESSON, ids=lambda v: getattr(v, "__name__", v))
def test_the_lessons_code_fails_a_hidden_case(exercise_id, pasted, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, pasted, hidden_cases(exercise, seed)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, slip", SLIPS, ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_fails_the_instant_check_and_a_hidden_case(exercise_id, slip, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, slip, hidden_cases(exercise, seed)))
    instant = instant_cases(exercise, seed)
    assert not all(passed(exercise, slip, instant))


def test_a_slip_gets_a_message_that_names_it():
    def message(exercise_id, function, index=0):
        exercise = EXERCISES[exercise_id]
        case = instant_cases(exercise, 0)[index]
        return exercise.compare(function(*case.args), case)

    assert "`if pad_id:`" in message("embed.one_hot", one_hot_truthy_pad)
    assert "off by one" in message("embed.embed", embed_off_by_one)
    assert "interleaved" in message("embed.sinusoidal", lesson_sinusoidal_adapted)
    assert "exponent" in message("embed.sinusoidal", sinusoidal_wrong_exponent)
    assert "nan" in message("embed.cosine", lesson_cosine_adapted, 1)
    assert "leave all three out" in message("embed.neighbours", analogy_keeps_inputs)
    assert "total over every direction" in message("embed.pca", pca_ratio_of_kept)


# --- what each task rules out is reported as forbidden ----------------------------------------

def embed_by_indexing(ids, token_table, position_table, start):
    return token_table[ids] + position_table[start:start + ids.shape[1]]


def embed_by_index_select(ids, token_table, position_table, start):
    rows = token_table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, -1)
    return rows + position_table[start:start + ids.shape[1]]


def embed_by_gather(ids, token_table, position_table, start):
    flat = ids.reshape(-1, 1).expand(-1, token_table.shape[1])
    rows = token_table.gather(0, flat).reshape(*ids.shape, -1)
    return rows + position_table[start:start + ids.shape[1]]


def embed_by_f_embedding(ids, token_table, position_table, start):
    return F.embedding(ids, token_table) + position_table[start:start + ids.shape[1]]


def embed_by_nn_embedding(ids, token_table, position_table, start):
    table = torch.nn.Embedding.from_pretrained(token_table)
    return table(ids) + position_table[start:start + ids.shape[1]]


def embed_positions_by_index(ids, token_table, position_table, start):   # the positions too
    positions = torch.arange(start, start + ids.shape[1])
    return one_hot(ids, token_table.shape[0]) @ token_table + position_table[positions]


def embed_by_take(ids, token_table, position_table, start):
    d = token_table.shape[1]
    flat = (ids[..., None] * d + torch.arange(d)).reshape(-1)
    rows = token_table.take(flat).reshape(*ids.shape, d)
    return rows + position_table[start:start + ids.shape[1]]


def embed_by_rows_of_the_identity(ids, token_table, position_table, start):   # a lookup too
    one_hots = torch.eye(token_table.shape[0])[ids]
    return one_hots @ token_table + position_table[start:start + ids.shape[1]]


def cosine_by_cdist(a, b):          # |u - v|^2 = 2 - 2 cos for unit vectors
    unit_a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    unit_b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = 1 - torch.cdist(unit_a, unit_b) ** 2 / 2
    zero = (a.norm(dim=1) == 0)[:, None] | (b.norm(dim=1) == 0)[None, :]
    return cos.masked_fill(zero, 0.0)


def one_hot_by_torch(ids, vocab_size, pad_id=None):
    out = F.one_hot(ids, vocab_size).float()
    return out if pad_id is None else out * (ids != pad_id)[..., None]


def sinusoidal_by_llmkit(positions, d_model, base=10000.0):
    from llmkit.model.embeddings import sinusoidal_positions
    table = sinusoidal_positions(int(positions.max()) + 1, d_model, base)[positions]
    return torch.cat([table[:, 0::2], table[:, 1::2]], dim=1)


def sinusoidal_by_rotary(positions, d_model, base=10000.0):   # its cos buffer is the layout
    from llmkit.model.embeddings import RotaryEmbedding
    rotary = RotaryEmbedding(d_model, int(positions.max()) + 1, base)
    half = d_model // 2
    return torch.cat([rotary.sin[positions, :half], rotary.cos[positions, :half]], dim=1)


def cosine_by_torch(a, b):
    return F.cosine_similarity(a[:, None], b[None], dim=-1)


def cosine_by_normalize(a, b):
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def analogy_by_llmkit(vectors, a, b, c, k):
    from llmkit.viz import nearest_neighbours
    extended = torch.cat([vectors, (vectors[b] - vectors[a] + vectors[c])[None]])
    found = [row for row, _ in nearest_neighbours(extended, len(vectors), k + 3)]
    return [row for row in found if row not in (a, b, c)][:k]


def pca_by_lowrank(vectors, k):
    _, _, v = torch.pca_lowrank(vectors, q=k)
    return (vectors - vectors.mean(0)) @ v, torch.zeros(k)


def pca_by_llmkit(vectors, k):
    from llmkit.viz.embeddings import pca as finished
    return finished(vectors, k), torch.zeros(k)


FORBIDDEN = [("embed.embed", embed_by_indexing, "aten.index"),
             ("embed.embed", embed_by_index_select, "aten.index_select"),
             ("embed.embed", embed_by_gather, "aten.gather"),
             ("embed.embed", embed_by_f_embedding, "embedding"),
             ("embed.embed", embed_by_nn_embedding, "mbedding"),
             ("embed.embed", embed_positions_by_index, "aten.index"),
             ("embed.embed", embed_by_take, "aten.take"),
             ("embed.embed", embed_by_rows_of_the_identity, "aten.index"),
             ("embed.one_hot", one_hot_by_torch, "one_hot"),
             ("embed.sinusoidal", sinusoidal_by_llmkit, "sinusoidal_positions"),
             ("embed.sinusoidal", sinusoidal_by_rotary, "RotaryEmbedding"),
             ("embed.cosine", cosine_by_torch, "cosine_similarity"),
             ("embed.cosine", cosine_by_normalize, "normalize"),
             ("embed.cosine", cosine_by_cdist, "aten._cdist_forward"),
             ("embed.neighbours", analogy_by_llmkit, "nearest_neighbours"),
             ("embed.pca", pca_by_lowrank, "pca_lowrank"),
             ("embed.pca", pca_by_llmkit, "pca")]


@pytest.mark.parametrize("exercise_id, route, named", FORBIDDEN,
                         ids=lambda v: getattr(v, "__name__", v))
def test_a_ruled_out_route_is_reported_forbidden(exercise_id, route, named):
    result = check(exercise_id, route)
    assert result.status == "forbidden", str(result)
    assert named in result.message, result.message


@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_the_reference_solutions_pass_the_check_itself(exercise_id):
    """Through `check`, with the watch on: slices, single rows, the learner's own one-hot
    product and plain indexing outside `embed` stay allowed."""
    result = check(exercise_id, RIGHT[exercise_id])
    assert result.status == "passed", str(result)
