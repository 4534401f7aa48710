# Evidence for bench/RESULTS-cuda.md (the bf16 fixture target): run on the GPU machine with PyTorch,
# from the project root with ../shared/fixtures present:  python3 bench/tools/bf16-autocast-check.py
# The tiny fixture through the MosaicGPT math in PyTorch under torch.autocast(bfloat16) on the GPU
# (LPLayerNorm semantics: low_precision_layernorm), scored as test/cuda-model.test.ts scores mpt-ts.
import json, math, torch, torch.nn.functional as F
from safetensors.torch import load_file
D = '../shared/fixtures/mosaic-gpt-tiny/'
W = {k: v.cuda() for k, v in load_file(D + 'model.safetensors').items()}
ref = json.load(open(D + 'reference.json')); ids = torch.tensor(ref['prompt_ids']).cuda(); T = len(ids)
reflog = torch.frombuffer(bytearray(open(D + 'reference_logits.f32', 'rb').read()), dtype=torch.float32).view(T, -1)
def lpln(x, w):  # LPLayerNorm: x and w in the autocast dtype, layer_norm with autocast off
    with torch.autocast('cuda', enabled=False):
        return F.layer_norm(x.to(torch.bfloat16), (x.shape[-1],), w.to(torch.bfloat16), None, 1e-5)
def run(lp):
    ln = lpln if lp else (lambda x, w: F.layer_norm(x, (x.shape[-1],), w, None, 1e-5))
    with torch.autocast('cuda', dtype=torch.bfloat16):
        x = F.embedding(ids, W['transformer.wte.weight'])[None]
        H, dh = 4, 16
        slopes = torch.tensor([2 ** (-8 * (i + 1) / H) for i in range(H)], device='cuda').view(1, H, 1, 1)
        bias = slopes * (torch.arange(T, device='cuda') - (T - 1)).view(1, 1, 1, T).float()
        causal = torch.ones(T, T, device='cuda', dtype=torch.bool).triu(1)
        for l in range(2):
            p = lambda s: W[f'transformer.blocks.{l}.{s}']
            h = ln(x, p('ln_1.weight'))
            qkv = F.linear(h, p('attn.Wqkv.weight'))
            q, k, v = qkv.chunk(3, dim=2)
            dt = q.dtype
            q = ln(q, p('attn.q_ln.weight')).to(dt); k = ln(k, p('attn.k_ln.weight')).to(dt)
            q = q.view(1, T, H, dh).transpose(1, 2); kt = k.view(1, T, H, dh).permute(0, 2, 3, 1); v = v.view(1, T, H, dh).transpose(1, 2)
            a = q.matmul(kt) * (1 / math.sqrt(dh)) + bias
            a = a.masked_fill(causal, torch.finfo(a.dtype).min)
            a = torch.softmax(a, dim=-1)
            o = a.matmul(v).transpose(1, 2).reshape(1, T, H * dh)
            x = x + F.linear(o, p('attn.out_proj.weight'))
            h = ln(x, p('ln_2.weight'))
            x = x + F.linear(F.gelu(F.linear(h, p('mlp.mlp_up.weight'))), p('mlp.mlp_down.weight'))
        h = ln(x, W['transformer.ln_f.weight'])
        logits = F.linear(h, W['transformer.wte.weight'])[0].float()
    mism, worst = 0, 0.0
    for pos, top in enumerate(ref['top5_every_position']):
        v, i = logits[pos].topk(5)
        if i.tolist() != [a for a, _ in top]: mism += 1
        worst = max(worst, max(abs(float(a) - b) for a, (_, b) in zip(v, top)))
    return mism, worst, float((logits - reflog.cuda()).abs().max()), str(logits.dtype)
for lp in (True, False):
    m, w, a, _ = run(lp)
    print(f'torch.autocast(bfloat16) on the GPU, {"LPLayerNorm" if lp else "float32 LayerNorm"}: {m} of 29 positions with other top-5 ids; worst top-5 |dlogit| {w:.3e}; max |dlogit| {a:.3e}')
