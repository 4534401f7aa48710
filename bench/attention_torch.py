"""PyTorch attention on the shapes of src/bench/cuda-attention-bench.ts (16 heads of 128, t = 2048,
causal, bf16): the forward at batch 1 and 8 and the backward at batch 8, for
  sdpa-alibi  F.scaled_dot_product_attention with the ALiBi + causal bias as a float mask (what the
              eager baselines of bench/torch_baseline.py run),
  sdpa-flash  F.scaled_dot_product_attention(is_causal=True) without ALiBi: PyTorch's FlashAttention-2
              kernel, the reference for what mma.sync reaches on this card,
  flex-alibi  torch.compile'd FlexAttention with an ALiBi score_mod over a causal block mask.
CUDA events, median of --reps after warm-up; the backward is (forward + backward) − forward. TFLOP/s
with the same convention as the TypeScript bench (causal half; backward 2.5 × forward). One JSON line last.
"""
import argparse, json, statistics
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--reps', type=int, default=20)
args = p.parse_args()
H, DH, T = 16, 128, 2048
dev, dt = 'cuda', torch.bfloat16
slopes = torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)], device=dev, dtype=torch.float32)
pos = torch.arange(T, device=dev)
rel = (pos[None, :] - pos[:, None]).float()  # j − i
bias = (slopes[:, None, None] * rel[None]).masked_fill(rel[None] > 0, float('-inf')).to(dt)[None]  # [1, H, T, T]


def fwd_flops(b):
    return 4 * b * H * T * T * DH / 2


def timed(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(args.reps):
        a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); e.record(); e.synchronize()
        ms.append(a.elapsed_time(e))
    return statistics.median(ms)


def bench(name, attn):
    out = {}
    for b in (1, 8):
        q, k, v = (torch.randn(b, H, T, DH, device=dev, dtype=dt) for _ in range(3))
        with torch.no_grad():
            ms = timed(lambda: attn(q, k, v))
        out[f'fwd_b{b}_ms'] = ms
        out[f'fwd_b{b}_tflops'] = fwd_flops(b) / (ms * 1e9)
        print(f'torch {name:11s} forward, batch {b}: {ms:.3f} ms, {fwd_flops(b) / (ms * 1e9):.1f} TFLOP/s', flush=True)
    q, k, v = (torch.randn(8, H, T, DH, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
    g = torch.randn(8, H, T, DH, device=dev, dtype=dt)
    fwd = timed(lambda: attn(q, k, v))
    both = timed(lambda: attn(q, k, v).backward(g))
    ms = both - fwd
    out['bwd_b8_ms'] = ms
    out['bwd_b8_tflops'] = 2.5 * fwd_flops(8) / (ms * 1e9)
    print(f'torch {name:11s} backward, batch 8: {ms:.3f} ms, {2.5 * fwd_flops(8) / (ms * 1e9):.1f} TFLOP/s', flush=True)
    return out


results = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__}
results['sdpa-alibi'] = bench('sdpa-alibi', lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
results['sdpa-flash'] = bench('sdpa-flash', lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
try:
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask

    def alibi(score, b, h, qi, kj):
        return score + slopes[h] * (kj - qi)

    block_mask = create_block_mask(lambda b, h, qi, kj: qi >= kj, None, None, T, T, device=dev)
    flex = torch.compile(flex_attention)
    results['flex-alibi'] = bench('flex-alibi', lambda q, k, v: flex(q, k, v, score_mod=alibi, block_mask=block_mask))
except Exception as error:  # an older PyTorch: report, do not fail the run
    results['flex-alibi'] = {'error': str(error).split('\n')[0]}
print(json.dumps(results))
