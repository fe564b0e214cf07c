import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genforge.errors import GenforgeError
from genforge.models.maskgit import MaskGIT, MaskGITConfig, mask_schedule, training_mask_counts

V, H, W = 16, 4, 4
T = H * W


def tiny(seed: int = 0, **overrides) -> MaskGIT:
    fields = dict(vocab_size=V, grid_h=H, grid_w=W, n_layer=2, n_head=2, n_embd=32)
    fields.update(overrides)
    torch.manual_seed(seed)
    return MaskGIT(MaskGITConfig(**fields))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_training_mask_counts_follow_cosine_schedule():
    r = torch.tensor([0.0, 1 / 3, 0.5, 0.999])
    expected = [T, math.ceil(math.cos(math.pi / 6) * T), math.ceil(math.cos(math.pi / 4) * T), 1]
    assert training_mask_counts(r, T).tolist() == expected == [16, 14, 12, 1]
    # random_mask masks exactly that many positions per sample, drawn from the same generator.
    model = tiny()
    mask = model.random_mask(500, gen(3))
    counts = training_mask_counts(torch.rand(500, generator=gen(3)), T)
    assert torch.equal(mask.sum(1), counts)
    # Positions are chosen uniformly: every position is masked about as often as any other.
    per_position = mask.float().mean(0)
    assert (per_position - per_position.mean()).abs().max() < 0.1


def test_loss_covers_only_masked_positions():
    model = tiny().eval()  # no dropout, no class dropout: the forward pass is deterministic
    grids = torch.randint(0, V, (4, H, W), generator=gen(0))
    flat = grids.view(4, T)
    loss, parts = model.loss(grids, generator=gen(1))
    mask = model.random_mask(4, gen(1))
    with torch.no_grad():
        logits = model(flat.masked_fill(mask, model.mask_id))
    assert torch.allclose(loss, F.cross_entropy(logits[mask], flat[mask]), atol=1e-6)
    assert not torch.allclose(loss, F.cross_entropy(logits.reshape(-1, V), flat.reshape(-1)), atol=1e-4)
    assert parts["mask_ratio"].item() == pytest.approx(mask.float().mean().item())
    # Gradient flows only through masked positions' logits.
    logits = model(flat.masked_fill(mask, model.mask_id)).detach().requires_grad_(True)
    F.cross_entropy(logits[mask], flat[mask]).backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()


def test_generate_unmasks_on_the_cosine_schedule():
    model = tiny().eval()
    seen = []
    hook = model.tok_emb.register_forward_pre_hook(lambda m, args: seen.append((args[0] == V).sum(1)))
    out = model.generate(3, steps=4, generator=gen(0))
    hook.remove()
    # Inputs to step s have floor(T * cos(pi/2 * s / steps)) masked tokens (all of them at s = 0).
    expected = [math.floor(T * mask_schedule(s / 4)) for s in range(4)]
    assert expected == [16, 14, 11, 6]
    assert [int(c[0]) for c in seen] == expected
    assert all((c == c[0]).all() for c in seen)
    assert out.shape == (3, H, W) and out.dtype == torch.long
    assert 0 <= int(out.min()) and int(out.max()) < V


@pytest.mark.parametrize("steps", [1, 8, 40])
def test_generate_returns_only_codes(steps):
    model = tiny()
    out = model.generate(5, steps=steps, top_k=4, temperature=0.7, generator=gen(steps))
    assert out.shape == (5, H, W)
    assert 0 <= int(out.min()) and int(out.max()) < V  # no [MASK] (= V) left
    assert model.training  # generate restores the mode it found
    assert torch.equal(out, model.generate(5, steps=steps, top_k=4, temperature=0.7, generator=gen(steps)))


def test_overfit_one_pattern_is_reproduced():
    torch.manual_seed(0)
    model = tiny(dropout=0.0)
    pattern = (torch.arange(T) * 5 % V).view(1, H, W)
    data = pattern.repeat(16, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for step in range(60):
        loss, _ = model.loss(data, generator=gen(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    out = model.generate(4, generator=gen(0))
    assert torch.equal(out, pattern.expand(4, H, W))


def test_guidance_paths():
    model = tiny(num_classes=3).eval()
    labels = [0, 2, 1, 1]
    plain = model.generate(4, labels=labels, generator=gen(0))
    assert torch.equal(model.generate(4, labels=labels, cfg_scale=1.0, generator=gen(0)), plain)
    guided = model.generate(4, labels=labels, cfg_scale=3.0, generator=gen(0))
    assert guided.shape == (4, H, W) and int(guided.max()) < V
    # Scale 0 keeps only the null-class logits of the batched [cond; null] pass.
    null = model.generate(4, generator=gen(0))
    assert torch.equal(model.generate(4, labels=labels, cfg_scale=0.0, generator=gen(0)), null)


def test_state_dict_roundtrip_through_safetensors(tmp_path):
    model = tiny(num_classes=2).eval()
    path = tmp_path / "maskgit.safetensors"
    save_file(model.state_dict(), str(path))
    other = tiny(seed=9, num_classes=2).eval()
    other.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randint(0, V + 1, (2, T), generator=gen(0))
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([1, 0])), other(x, torch.tensor([1, 0])))


def test_bad_input_raises_one_clear_error():
    with pytest.raises(GenforgeError, match="steps must be a positive integer"):
        MaskGITConfig(steps=0)
    with pytest.raises(GenforgeError, match="n_head must divide n_embd"):
        MaskGITConfig(n_head=5)
    model = tiny()
    with pytest.raises(GenforgeError, match="steps"):
        model.generate(2, steps=0)
    with pytest.raises(GenforgeError, match="shape"):
        model.loss(torch.zeros(2, T, dtype=torch.long))
    with pytest.raises(GenforgeError, match="unconditional"):
        model.generate(2, labels=1)
    with pytest.raises(GenforgeError, match="sampling option 'top_p' does not apply to maskgit priors"):
        model.generate(2, top_p=0.9)
