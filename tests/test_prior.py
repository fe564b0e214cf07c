import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genforge.errors import GenforgeError
from genforge.models.prior import PriorConfig, TransformerPrior
from genforge.models.transformer import filter_logits, guided, sample_from_logits

V, H, W = 16, 4, 4
T = H * W


def tiny(seed: int = 0, **overrides) -> TransformerPrior:
    fields = dict(vocab_size=V, grid_h=H, grid_w=W, n_layer=2, n_head=2, n_embd=32)
    fields.update(overrides)
    torch.manual_seed(seed)
    return TransformerPrior(PriorConfig(**fields))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def train(model, grids, labels=None, steps=100, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model.nll(grids, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


# Two classes with distinct, easy-to-learn patterns: a ramp and its reverse.
PATTERNS = torch.stack([torch.arange(T) % V, (T - 1 - torch.arange(T)) % V]).view(2, H, W)


@pytest.fixture(scope="module")
def conditional_model():
    torch.manual_seed(1)
    model = tiny(num_classes=2, dropout=0.0, class_dropout=0.2)
    labels = torch.tensor([0, 1] * 8)
    return train(model, PATTERNS[labels], labels, steps=80, lr=1e-2)


def test_cached_and_uncached_sampling_agree():
    model = tiny(dropout=0.1)
    model.train()  # generate must switch to eval (no dropout) and back
    a = model.generate(6, use_cache=True, generator=gen(7))
    b = model.generate(6, use_cache=False, generator=gen(7))
    assert model.training
    assert a.shape == (6, H, W) and a.dtype == torch.long
    assert 0 <= int(a.min()) and int(a.max()) < V
    assert torch.equal(a, b)
    c = model.generate(6, use_cache=True, generator=gen(8))
    assert not torch.equal(a, c)


def test_cached_and_uncached_agree_with_guidance_and_filters():
    model = tiny(num_classes=3).eval()
    kwargs = dict(labels=[0, 1, 2, 0, 1], cfg_scale=2.5, top_k=5, top_p=0.9, temperature=0.8)
    a = model.generate(5, use_cache=True, generator=gen(3), **kwargs)
    b = model.generate(5, use_cache=False, generator=gen(3), **kwargs)
    assert torch.equal(a, b)


def test_batch_size_splits_the_work():
    model = tiny().eval()
    out = model.generate(5, batch_size=2, generator=gen(0))
    assert out.shape == (5, H, W)
    assert model.generate(0).shape == (0, H, W)


def test_causal_masking():
    model = tiny().eval()
    x = torch.randint(0, V, (2, T), generator=gen(0))
    with torch.no_grad():
        base = model(x)
        for t in range(T):
            changed = x.clone()
            changed[:, t] = (x[:, t] + 1) % V
            out = model(changed)
            # Output s predicts x_s from x_<s, so outputs 0..t never see x_t.
            assert torch.allclose(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6), t
            if t + 1 < T:
                assert not torch.allclose(out[:, t + 1], base[:, t + 1]), t


def test_top_k_never_samples_outside_top_k():
    logits = torch.randn(1, V, generator=gen(0)).expand(4000, V)
    samples = sample_from_logits(logits, top_k=3, generator=gen(1))
    allowed = set(torch.topk(logits[0], 3).indices.tolist())
    assert set(samples.tolist()) == allowed


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: set(torch.isfinite(filter_logits(logits, top_p=p))[0].nonzero().flatten().tolist())
    assert kept(0.4) == {1}
    assert kept(0.75) == {1, 3}
    assert kept(0.81) == {1, 3, 2}
    assert kept(0.97) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    # The same property on random rows: the kept mass reaches p, and drops below p without its
    # least likely member.
    rows = torch.randn(50, V, generator=gen(2)) * 2
    p = 0.7
    mask = torch.isfinite(filter_logits(rows, top_p=p))
    probs = rows.softmax(-1)
    kept_mass = (probs * mask).sum(-1)
    smallest_kept = probs.masked_fill(~mask, 2.0).min(-1).values
    assert (kept_mass >= p - 1e-6).all()
    assert (kept_mass - smallest_kept < p).all()
    # Kept tokens are the most likely ones.
    assert (probs.masked_fill(mask, -1.0).max(-1).values <= smallest_kept).all()
    samples = sample_from_logits(rows.repeat(20, 1), top_p=p, generator=gen(3))
    assert mask.repeat(20, 1).gather(1, samples[:, None]).all()


def test_temperature_to_zero_approaches_argmax():
    logits = torch.randn(500, V, generator=gen(0)) * 3
    top2 = torch.topk(logits, 2).values
    logits = logits[(top2[:, 0] - top2[:, 1]) > 0.05]
    assert torch.equal(sample_from_logits(logits, temperature=1e-3, generator=gen(1)), logits.argmax(-1))
    assert torch.equal(sample_from_logits(logits, temperature=0.0), logits.argmax(-1))
    # At temperature 1 the draws do differ from argmax somewhere.
    assert not torch.equal(sample_from_logits(logits, temperature=1.0, generator=gen(1)), logits.argmax(-1))
    model = tiny().eval()
    greedy = model.generate(3, temperature=0.0, generator=gen(1))
    assert torch.equal(greedy, model.generate(3, temperature=0.0, generator=gen(2)))


def test_class_conditioning_gives_the_class_pattern(conditional_model):
    labels = torch.tensor([0, 1, 1, 0])
    out = conditional_model.generate(4, labels=labels, temperature=0.5, generator=gen(0))
    assert torch.equal(out, PATTERNS[labels])
    # Guidance pushes further towards the class; the batched [cond; null] path must agree.
    out = conditional_model.generate(4, labels=labels, cfg_scale=3.0, generator=gen(0))
    assert torch.equal(out, PATTERNS[labels])


def test_guidance_scale_one_is_plain_conditional_and_zero_is_null_class(conditional_model):
    cond, uncond = torch.randn(2, 3, V).unbind(0)
    assert torch.allclose(guided(torch.cat([cond, uncond]), 1.0), cond, rtol=0, atol=1e-6)
    assert torch.equal(guided(torch.cat([cond, uncond]), 0.0), uncond)
    model = conditional_model
    labels = [0, 1, 0, 1, 1, 0]
    plain = model.generate(6, labels=labels, generator=gen(5))
    assert torch.equal(model.generate(6, labels=labels, cfg_scale=1.0, generator=gen(5)), plain)
    # Scale 0 runs the guided two-row path but keeps only the null-class logits.
    null = model.generate(6, generator=gen(5), temperature=2.0)
    assert torch.equal(model.generate(6, labels=labels, cfg_scale=0.0, generator=gen(5), temperature=2.0), null)


def test_nll_is_log_vocab_for_zero_head_and_matches_cross_entropy():
    model = tiny().eval()
    grids = torch.randint(0, V, (3, H, W), generator=gen(0))
    flat = grids.view(3, T)
    with torch.no_grad():
        manual = F.cross_entropy(model(flat).reshape(-1, V), flat.reshape(-1))
        assert torch.allclose(model.nll(grids), manual, atol=1e-6)
        torch.nn.init.zeros_(model.head.weight)
        assert abs(model.nll(grids).item() - math.log(V)) < 1e-6


def test_few_training_steps_drop_nll():
    model = tiny(dropout=0.0)
    grids = torch.randint(0, V, (2, H, W), generator=gen(0)).repeat(4, 1, 1)
    with torch.no_grad():
        before = model.eval().nll(grids).item()
    train(model, grids, steps=40)
    with torch.no_grad():
        after = model.nll(grids).item()
    assert after < 0.5 * before, (before, after)


def test_state_dict_roundtrip_through_safetensors(tmp_path):
    model = tiny(num_classes=3).eval()
    path = tmp_path / "prior.safetensors"
    save_file(model.state_dict(), str(path))
    other = tiny(seed=123, num_classes=3).eval()
    other.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randint(0, V, (2, T), generator=gen(0))
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0, 2])), other(x, torch.tensor([0, 2])))


def test_bad_input_raises_one_clear_error():
    with pytest.raises(GenforgeError, match=r"n_head must divide n_embd \(32\), got 3"):
        PriorConfig(n_head=3, n_embd=32)
    with pytest.raises(GenforgeError, match="dropout"):
        PriorConfig(dropout=1.5)
    model = tiny()
    with pytest.raises(GenforgeError, match="unconditional"):
        model.generate(2, labels=[0, 1])
    with pytest.raises(GenforgeError, match="shape"):
        model.nll(torch.zeros(2, H + 1, W, dtype=torch.long))
    with pytest.raises(GenforgeError, match=r"\[0, 16\)"):
        model.nll(torch.full((2, H, W), V))
    with pytest.raises(GenforgeError, match="labels"):
        tiny(num_classes=2).generate(2, labels=[0, 5])
    with pytest.raises(GenforgeError, match="cfg_scale"):
        tiny(num_classes=2).generate(2, cfg_scale=2.0)
    with pytest.raises(GenforgeError, match="top_k"):
        model.generate(1, top_k=0)
    with pytest.raises(GenforgeError, match="top_p"):
        model.generate(1, top_p=0.0)
    with pytest.raises(GenforgeError, match="sampling option 'steps' does not apply to ar priors"):
        model.generate(1, steps=4)
