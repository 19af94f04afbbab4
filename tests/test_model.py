"""The GPT model: shapes, loss, attention paths, KV cache, variants and parameter counts.

References are independent of llmkit: PyTorch's own ops (cross_entropy, nn.RMSNorm,
scaled_dot_product_attention), Hugging Face's rotary embedding, and brute-force loops
written out here.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.model import GPT, GPTConfig, MixtureOfExperts, RMSNorm, sinusoidal_positions
from llmkit.model.attention import masked_attention
from llmkit.model.embeddings import RotaryEmbedding

TINY = dict(vocab_size=61, context_length=24, n_layer=2, n_head=4, d_model=32)
VARIANTS = {
    "gpt2": {},
    "manual": dict(attention="manual"),
    "sinusoidal": dict(position="sinusoidal"),
    "llama": dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False),
    "untied": dict(tie_weights=False, bias=False),
    "moe": dict(mlp="moe", n_experts=4, experts_per_token=2),
}


def tiny_model(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


def random_ids(batch, length, vocab=TINY["vocab_size"], seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- config ---------------------------------------------------------------------------


def test_config_rejects_heads_that_do_not_divide_the_width_and_suggests_valid_ones():
    valid = r"\[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]"
    with pytest.raises(ValueError, match=r"divisible by n_head.*" + valid):
        GPTConfig(d_model=48, n_head=5)
    with pytest.raises(ValueError, match="position"):
        GPTConfig(position="alibi")
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3)


def test_config_round_trips_through_json():
    config = GPTConfig(**TINY, position="rope", n_kv_head=2, dropout=0.1)
    assert GPTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({**config.to_dict(), "n_embd": 32})


# --- forward and loss -----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_and_loss_equal_a_brute_force_cross_entropy(variant):
    model = tiny_model(**VARIANTS[variant])
    idx, targets = random_ids(3, 10), random_ids(3, 10, seed=2)
    targets[0, :4] = -100   # a masked prompt
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, TINY["vocab_size"]) and model(idx)[1] is None
    log_probs = logits.log_softmax(-1)
    picked = [-log_probs[b, t, targets[b, t]]
              for b in range(3) for t in range(10) if targets[b, t] != -100]
    torch.testing.assert_close(loss, torch.stack(picked).mean())


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_model_is_causal(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = random_ids(2, 12)
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % TINY["vocab_size"]
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_fast_and_readable_attention_paths_agree_in_training_mode_too():
    fast = tiny_model(attention="sdpa")
    readable = GPT(GPTConfig(**TINY, attention="manual"))
    readable.load_state_dict(fast.state_dict())
    idx, targets = random_ids(2, 20), random_ids(2, 20, seed=3)
    for mode in (False, True):   # dropout is 0, so train mode must agree as well
        fast.train(mode), readable.train(mode)
        torch.testing.assert_close(fast(idx, targets)[1], readable(idx, targets)[1])
    fast(idx, targets)[1].backward()
    readable(idx, targets)[1].backward()
    for (name, p), q in zip(fast.named_parameters(), readable.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_masked_attention_matches_torch_sdpa_with_a_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.rand(5, 5, generator=g) > 0.3
    mask[:, 0] = True   # every query sees at least one key
    out, weights = masked_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_attention_maps_equal_weights_recomputed_by_hand():
    model = tiny_model().train()
    idx = random_ids(1, 9)
    maps = model.attention_maps(idx)
    assert model.training, "attention_maps must restore train mode"
    assert isinstance(maps, tuple) and len(maps) == TINY["n_layer"]
    assert all(m.shape == (1, TINY["n_head"], 9, 9) and not m.requires_grad for m in maps)
    # Layer 0 by hand: embeddings, LayerNorm, the q/k slices of the fused projection, head by head.
    x = model.token_embedding.weight[idx[0]] + model.position_embedding.weight[:9]
    block = model.blocks[0]
    h = F.layer_norm(x, (32,), block.norm1.weight, block.norm1.bias, eps=1e-5)
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
    for head in range(4):
        q = qkv[:, head * 8:(head + 1) * 8]
        k = qkv[:, 32 + head * 8:32 + (head + 1) * 8]
        scores = torch.full((9, 9), float("-inf"))
        for i in range(9):
            for j in range(i + 1):
                scores[i, j] = q[i] @ k[j] / math.sqrt(8)
        torch.testing.assert_close(maps[0][0, head], scores.softmax(-1).detach())


def test_dropout_is_active_only_in_training():
    model = tiny_model(dropout=0.3)
    idx = random_ids(2, 8)
    torch.testing.assert_close(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_checkpoints_move_between_models_with_and_without_dropout():
    # With dropout 0 the dropout layers are no-ops (nn.Identity); they hold no weights either
    # way, so the parameters, and the outputs in eval mode, are the same.
    with_dropout, without = tiny_model(seed=1, dropout=0.2), tiny_model(seed=2, dropout=0.0)
    without.load_state_dict(with_dropout.state_dict(), strict=True)
    idx = random_ids(2, 8)
    torch.testing.assert_close(without(idx)[0], with_dropout.eval()(idx)[0], rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"25 tokens.*context_length is 24.*last 24"):
        model(random_ids(1, 25))
    with pytest.raises(ValueError, match=r"0\.\.60"):
        model(torch.tensor([[3, 61]]))
    with pytest.raises(ValueError, match=r"0\.\.60"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(random_ids(2, 4), random_ids(2, 5))


def test_a_few_steps_of_training_fit_a_fixed_batch():
    model = tiny_model().train()
    idx = random_ids(4, 16)
    targets = torch.roll(idx, -1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        _, loss = model(idx, targets)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


# --- KV cache -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_gives_the_uncached_logits_step_by_step(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = random_ids(2, TINY["context_length"])
    full = model(idx)[0]
    cache = model.new_kv_cache(batch_size=2)
    pieces = [model(idx[:, :5], kv_cache=cache)[0]]          # prefill 5 tokens
    pieces.append(model(idx[:, 5:9], kv_cache=cache)[0])     # a chunk after a non-empty cache
    for t in range(9, idx.shape[1]):                         # then one token at a time
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == TINY["context_length"] and cache.remaining == 0
    with pytest.raises(ValueError, match=r"cannot take 1 more.*reset"):
        model(idx[:, :1], kv_cache=cache)
    cache.reset()
    again = model(idx[:, :3], kv_cache=cache)[0]
    torch.testing.assert_close(again, full[:, :3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_static_cache_gives_the_uncached_logits_step_by_step(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = random_ids(2, TINY["context_length"])
    full = model(idx)[0]
    cache = model.new_kv_cache(batch_size=2, static=True)
    pieces = [model(idx[:, :5], kv_cache=cache)[0]]
    for t in range(5, idx.shape[1]):
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)
    # Every step attended to all max_len slots: the keys tensor never changed shape.
    assert cache.keys[0].shape[2] == TINY["context_length"] and cache.length == cache.max_len
    with pytest.raises(ValueError, match=r"cannot take 1 more"):
        model(idx[:, :1], kv_cache=cache)
    cache.reset()
    torch.testing.assert_close(model(idx[:, :3], kv_cache=cache)[0], full[:, :3],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["gpt2", "llama", "manual"])
def test_left_padding_is_masked_and_positions_start_at_each_rows_first_token(variant):
    model = tiny_model(**VARIANTS[variant])
    rows = [random_ids(1, 7)[0], random_ids(1, 3, seed=4)[0]]
    idx = torch.zeros(2, 7, dtype=torch.long)
    idx[0], idx[1, 4:] = rows[0], rows[1]
    n_pad = torch.tensor([0, 4])
    logits = model(idx, n_pad=n_pad)[0]
    torch.testing.assert_close(logits[1, 4:], model(rows[1][None])[0][0], rtol=1e-4, atol=1e-5)
    # The same through a cache, prompt first, then one token at a time.
    cache = model.new_kv_cache(2)
    cache.reset(n_pad)
    model(idx, kv_cache=cache)
    extra = random_ids(2, 1, seed=9)
    step = model(extra, kv_cache=cache)[0]
    alone = model(torch.cat([rows[1], extra[1]])[None])[0][0, -1]
    torch.testing.assert_close(step[1, 0], alone, rtol=1e-4, atol=1e-5)


def test_grouped_query_cache_stores_only_the_kv_heads():
    model = tiny_model(n_kv_head=1)
    cache = model.new_kv_cache(batch_size=3)
    model(random_ids(3, 4), kv_cache=cache)
    assert cache.keys[0].shape == (3, 1, TINY["context_length"], 8)
    with pytest.raises(ValueError, match="max_len"):
        model.new_kv_cache(1, max_len=TINY["context_length"] + 1)


# --- variants against independent references ------------------------------------------


def test_grouped_query_attention_equals_multi_head_attention_with_repeated_kv_heads():
    gqa = tiny_model(n_kv_head=2)
    mha = GPT(GPTConfig(**TINY)).eval()
    state = gqa.state_dict()
    for i in range(TINY["n_layer"]):
        for kind in ("weight", "bias"):
            name = f"blocks.{i}.attn.qkv.{kind}"
            q, k, v = state[name].split([32, 16, 16])
            # Heads 0,1 share kv head 0 and heads 2,3 share kv head 1: repeat each 8-row head twice.
            k = torch.cat([k[h * 8:(h + 1) * 8] for h in (0, 0, 1, 1)])
            v = torch.cat([v[h * 8:(h + 1) * 8] for h in (0, 0, 1, 1)])
            state[name] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    idx = random_ids(2, 11)
    torch.testing.assert_close(gqa(idx)[0], mha(idx)[0])


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0))
    ours, theirs = RMSNorm(16, eps=1e-5), torch.nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), theirs(x))


def test_rotary_embedding_matches_hugging_face_llama():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    head_dim, T, start = 16, 7, 3
    hf_config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=head_dim,
                            max_position_embeddings=32, rope_theta=10000.0)
    hf_rotary = LlamaRotaryEmbedding(hf_config)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, T, head_dim, generator=g), torch.randn(2, 4, T, head_dim, generator=g)
    cos, sin = hf_rotary(q, torch.arange(start, start + T)[None].expand(2, T))
    hf_q, hf_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours = RotaryEmbedding(head_dim, max_positions=32)
    torch.testing.assert_close(ours(q, start), hf_q)
    torch.testing.assert_close(ours(k, start), hf_k)


def test_mixture_of_experts_equals_a_per_token_loop():
    torch.manual_seed(0)
    moe = MixtureOfExperts(GPTConfig(**TINY, mlp="moe", n_experts=5, experts_per_token=2)).eval()
    x = torch.randn(2, 7, 32)
    out = moe(x)
    for b in range(2):
        for t in range(7):
            scores = moe.router.weight @ x[b, t]
            best = sorted(range(5), key=lambda e: -scores[e].item())[:2]
            gates = torch.softmax(scores[best], dim=0)
            outputs = [moe.experts[e](x[b, t][None, None])[0, 0] for e in best]
            expected = gates[0] * outputs[0] + gates[1] * outputs[1]
            torch.testing.assert_close(out[b, t], expected)
    used = {e for e in range(5) if moe.router(x.view(-1, 32)).topk(2).indices.eq(e).any()}
    assert len(used) > 2, "the routing should spread tokens over several experts"


def test_sinusoidal_positions_match_the_formula_written_out():
    table = sinusoidal_positions(10, 6)
    assert table.shape == (10, 6)
    for pos in range(10):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


# --- initialisation and counting -------------------------------------------------------


def test_gpt2_initialisation_and_weight_tying():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, context_length=64, n_layer=8, n_head=4, d_model=128))
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert torch.count_nonzero(model.blocks[0].mlp.fc.bias) == 0


@pytest.mark.parametrize("tie", [True, False])
def test_num_params_and_flops_match_the_formulas(tie):
    V, T, L, d = 97, 40, 3, 48
    model = GPT(GPTConfig(vocab_size=V, context_length=T, n_layer=L, n_head=4, d_model=d,
                          tie_weights=tie))
    # norm1, qkv, attention proj, norm2, MLP fc, MLP proj (weights + biases)
    per_block = (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (2 * d) \
        + (4 * d * d + 4 * d) + (4 * d * d + d)
    head = 0 if tie else V * d
    expected = V * d + T * d + L * per_block + 2 * d + head
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == expected == sum(unique.values())
    non_embedding = expected - T * d - (0 if tie else V * d)
    assert model.num_params(include_embeddings=False) == non_embedding
    assert model.flops_per_token() == 6 * non_embedding + 12 * L * T * d
    assert model.flops_per_token(context_length=10) == 6 * non_embedding + 12 * L * 10 * d


def test_mixture_of_experts_counts_all_experts_but_flops_only_the_active_ones():
    V, T, L, d, E, k = 97, 40, 2, 32, 4, 2
    model = GPT(GPTConfig(vocab_size=V, context_length=T, n_layer=L, n_head=4, d_model=d, mlp="moe",
                          n_experts=E, experts_per_token=k))
    expert = (4 * d * d + 4 * d) + (4 * d * d + d)
    per_block = (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (2 * d) + d * E + E * expert
    assert model.num_params() == V * d + T * d + L * per_block + 2 * d
    active = V * d + L * (per_block - (E - k) * expert) + 2 * d
    assert model.flops_per_token() == 6 * active + 12 * L * T * d


def test_a_target_outside_the_vocabulary_is_a_clear_error_not_an_index_error():
    model = GPT(GPTConfig(vocab_size=10, context_length=8, n_layer=1, n_head=1, d_model=8))
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"token ids in 0\.\.9 or -100"):
        model(idx, torch.tensor([[1, 2, 3, 10]]))
    # The skipped id is allowed, and the loss then equals PyTorch's own over the rest.
    targets = torch.tensor([[1, 2, -100, 9]])
    logits, loss = model(idx, targets)
    keep = targets[0] != -100
    expected = torch.nn.functional.cross_entropy(logits[0][keep], targets[0][keep])
    torch.testing.assert_close(loss, expected)
