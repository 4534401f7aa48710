"""PyTorch baseline for `mpt bench --device cuda`: the same MPT model (mpt-1b-redpajama-200b's
configuration: ALiBi, QK LayerNorm, no biases, exact GELU, tied embedding), eager PyTorch, bf16
weights and activations, attention through F.scaled_dot_product_attention with the ALiBi + causal
bias as a float mask, a preallocated KV cache, greedy decoding. Random weights (std 0.02).

Measures what src/bench/cuda-bench.ts measures, the same way: decode tokens/s at batch 1 and 16
(`--new` tokens after a `--prompt`-token prompt, each step's tokens read back to the host), the time
of one `--prefill`-token prompt (logits of the last position only), and peak allocated GPU memory.
Prints one JSON line last.
"""
import argparse, json, math, statistics, sys
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--prompt', type=int, default=16)
p.add_argument('--new', type=int, default=128)
p.add_argument('--prefill', type=int, default=2048)
p.add_argument('--repeats', type=int, default=5)
p.add_argument('--layers', type=int, default=24)
p.add_argument('--train', choices=['eager', 'compile'], help='time training steps instead (see train_baseline)')
p.add_argument('--microbatch', type=int, default=8)
p.add_argument('--seq', type=int, default=2048)
p.add_argument('--steps', type=int, default=5)
p.add_argument('--warmup', type=int, default=3)
args = p.parse_args()

D, H, V, EPS = 2048, 16, 50432, 1e-5
DH, HID, L = D // H, 4 * D, args.layers
dev, dt = 'cuda', torch.bfloat16
torch.manual_seed(0)


def train_baseline(mode):
    """Training steps for `mpt bench train`: the same model as an nn.Module with float32 parameters
    (std 0.02, LayerNorm weights 1), bf16 autocast, fused AdamW, gradient clipping at 1.0, the tied
    output layer and cross entropy over the whole batch's logits. Attention: `eager` through
    F.scaled_dot_product_attention with the ALiBi + causal bias as a float mask; `compile` is
    torch.compile of the model with FlexAttention and an ALiBi score_mod over a causal block mask.
    Times `--steps` steps after `--warmup` with CUDA events (median); peak = max_memory_allocated."""
    import torch.nn as nn
    T, B = args.seq, args.microbatch
    slopes_t = torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)], device=dev, dtype=torch.float32)
    if mode == 'compile':
        from torch.nn.attention.flex_attention import flex_attention, create_block_mask
        block_mask = create_block_mask(lambda b, h, q, kv: q >= kv, None, None, T, T, device=dev)

        def alibi(score, b, h, q, kv):
            return score + slopes_t[h] * (kv - q)
        flex = torch.compile(flex_attention)
        attend = lambda q, k, v: flex(q, k, v, score_mod=alibi, block_mask=block_mask)
    else:
        pos = torch.arange(T, device=dev)
        bias = -(pos.view(T, 1) - pos.view(1, T)).float().view(1, 1, T, T) * slopes_t.view(1, H, 1, 1)
        bias = bias.masked_fill((pos.view(1, T) > pos.view(T, 1)).view(1, 1, T, T), float('-inf')).to(dt)
        attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.qln, self.kln, self.ln2 = (nn.LayerNorm(D, bias=False) for _ in range(4))
            self.wqkv, self.out = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
            self.up, self.down = nn.Linear(D, HID, bias=False), nn.Linear(HID, D, bias=False)

        def forward(self, x):
            q, k, v = self.wqkv(self.ln1(x)).split(D, dim=-1)
            q, k = self.qln(q), self.kln(k)
            q, k, v = (y.reshape(B, T, H, DH).transpose(1, 2) for y in (q, k, v))
            o = attend(q, k, v).transpose(1, 2).reshape(B, T, D)
            x = x + self.out(o)
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(D, bias=False)

        def forward(self, ids, targets):
            x = self.wte(ids)
            for b in self.blocks:
                x = b(x)
            logits = F.linear(self.lnf(x), self.wte.weight)
            return F.cross_entropy(logits.view(-1, V).float(), targets.view(-1), ignore_index=-1)

    model = Model().to(dev)
    for name, prm in model.named_parameters():
        if prm.dim() == 2:
            nn.init.normal_(prm, std=0.02)
    n_params = sum(p.numel() for p in model.parameters())
    run = torch.compile(model) if mode == 'compile' else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True)

    def step():
        ids = torch.randint(2, V - 200, (B, T), device=dev)
        targets = torch.cat([ids[:, 1:], torch.full((B, 1), -1, device=dev)], dim=1)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = run(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record(); step(); e.record(); e.synchronize()
        print(f'torch {mode} step {i + 1}: {s.elapsed_time(e):.1f} ms', file=sys.stderr)
        if i >= args.warmup:
            times.append(s.elapsed_time(e))
    ms = statistics.median(times)
    tps = B * T / (ms / 1000)
    flops_seq = 3 * (2 * n_params * T + L * 4 * D * T * T)
    print(json.dumps(dict(mode=mode, microbatch=B, seq=T, parameters=n_params, ms_per_step=ms, tokens_per_s=tps,
                          mfu=tps / T * flops_seq / 989e12, peak_memory_bytes=torch.cuda.max_memory_allocated(),
                          torch=torch.__version__, device=torch.cuda.get_device_name())))


if args.train:
    train_baseline(args.train)
    sys.exit(0)


def normal(*shape, mean=0.0, std=0.02):
    return (torch.randn(*shape, device=dev, dtype=torch.float32) * std + mean).to(dt)


W = dict(wte=normal(V, D), lnf=normal(D, mean=1, std=0.1), blocks=[dict(
    ln1=normal(D, mean=1, std=0.1), wqkv=normal(3 * D, D), qln=normal(D, mean=1, std=0.1), kln=normal(D, mean=1, std=0.1),
    out=normal(D, D), ln2=normal(D, mean=1, std=0.1), up=normal(HID, D), down=normal(D, HID)) for _ in range(L)])
slopes = torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)], device=dev, dtype=torch.float32)


def bias(t, start, s):
    """ALiBi + causal mask for queries at positions start..start+t-1 over keys 0..s-1: [1, H, t, s]."""
    qpos = torch.arange(start, start + t, device=dev).view(t, 1)
    kpos = torch.arange(s, device=dev).view(1, s)
    b = -(qpos - kpos).float().view(1, 1, t, s) * slopes.view(1, H, 1, 1)
    b = b.masked_fill((kpos > qpos).view(1, 1, t, s), float('-inf'))
    return b.to(dt)


@torch.no_grad()
def forward(ids, cache, start):
    """ids [B, t] after `start` cached positions; writes k, v into cache; returns next tokens [B]."""
    B, t = ids.shape
    x = F.embedding(ids, W['wte'])
    mask = bias(t, start, start + t)
    for i, w in enumerate(W['blocks']):
        a = F.layer_norm(x, (D,), w['ln1'], None, EPS)
        q, k, v = F.linear(a, w['wqkv']).split(D, dim=-1)
        q = F.layer_norm(q, (D,), w['qln'], None, EPS)
        k = F.layer_norm(k, (D,), w['kln'], None, EPS)
        kc, vc = cache[i]
        kc[:, :, start:start + t] = k.view(B, t, H, DH).transpose(1, 2)
        vc[:, :, start:start + t] = v.view(B, t, H, DH).transpose(1, 2)
        q = q.view(B, t, H, DH).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, kc[:, :, :start + t], vc[:, :, :start + t], attn_mask=mask)
        x = x + F.linear(o.transpose(1, 2).reshape(B, t, D), w['out'])
        x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, (D,), w['ln2'], None, EPS), w['up'])), w['down'])
    x = F.layer_norm(x[:, -1], (D,), W['lnf'], None, EPS)
    return F.linear(x, W['wte']).argmax(-1)


def new_cache(B, cap):
    return [(torch.empty(B, H, cap, DH, device=dev, dtype=dt), torch.empty(B, H, cap, DH, device=dev, dtype=dt)) for _ in range(L)]


def decode(B):
    cache = new_cache(B, args.prompt + args.new + 1)
    times = []
    for r in range(args.repeats + 1):
        ids = torch.randint(2, V - 200, (B, args.prompt), device=dev)
        nxt = forward(ids, cache, 0)
        torch.cuda.synchronize()
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record()
        pos = args.prompt
        for _ in range(args.new):
            nxt = forward(nxt.view(B, 1), cache, pos)
            nxt.tolist()  # read back, as streaming does
            pos += 1
        e.record(); e.synchronize()
        if r > 0:
            times.append(s.elapsed_time(e))
    ms = statistics.median(times)
    print(f'torch decode batch {B}: {B * args.new / (ms / 1000):.0f} tokens/s ({ms / args.new:.3f} ms/step)', file=sys.stderr)
    return B * args.new / (ms / 1000)


def prefill():
    cache = new_cache(1, args.prefill + 1)
    ids = torch.randint(2, V - 200, (1, args.prefill), device=dev)
    times = []
    for r in range(args.repeats + 2):
        torch.cuda.synchronize()
        s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        s.record()
        forward(ids, cache, 0)
        e.record(); e.synchronize()
        if r > 1:
            times.append(s.elapsed_time(e))
    ms = statistics.median(times)
    print(f'torch prefill {args.prefill}: {ms:.2f} ms', file=sys.stderr)
    return ms


torch.cuda.reset_peak_memory_stats()
result = dict(decode_b1_tokens_per_s=decode(1), decode_b16_tokens_per_s=decode(16), prefill_ms=prefill(),
              peak_memory_bytes=torch.cuda.max_memory_allocated(), torch=torch.__version__, device=torch.cuda.get_device_name())
print(json.dumps(result))
