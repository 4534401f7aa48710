# Evidence for bench/RESULTS-cuda.md (the bf16 fixture target): a numpy model of the tiny fixture that
# reproduces the float32 reference exactly, then rounds chosen weight groups to bf16 and scores top-5 drift.
import json,struct,numpy as np,sys,math
D=(sys.argv[1] if len(sys.argv) > 1 else '../shared/fixtures') + '/mosaic-gpt-tiny/'
f=open(D+'model.safetensors','rb'); n=struct.unpack('<Q',f.read(8))[0]; h=json.loads(f.read(n)); base=8+n
raw=open(D+'model.safetensors','rb').read()
W={k:np.frombuffer(raw[base+v['data_offsets'][0]:base+v['data_offsets'][1]],dtype=np.float32).reshape(v['shape']) for k,v in h.items() if k!='__metadata__'}
ref=json.load(open(D+'reference.json')); ids=ref['prompt_ids']; T=len(ids)
reflog=np.fromfile(D+'reference_logits.f32',dtype=np.float32).reshape(T,-1)
def bf(x):
    x=np.ascontiguousarray(x,dtype=np.float32); b=x.view(np.uint32).astype(np.uint64)
    b=((b+0x7fff+((b>>16)&1))>>16)<<16
    return b.astype(np.uint32).view(np.float32)
def ln(x,w,eps=1e-5):
    x=x.astype(np.float64); m=x.mean(-1,keepdims=True); v=((x-m)**2).mean(-1,keepdims=True)
    return ((x-m)/np.sqrt(v+eps)*w).astype(np.float32)
from math import erf
verf=np.vectorize(erf)
def gelu(x): return (0.5*x*(1+verf(x/math.sqrt(2)))).astype(np.float32)
def run(o):
    R=lambda name,x: bf(x) if name in o else x
    Wt={k:(bf(v) if ('wbf' in o and not (k.endswith('wte.weight') and 'embf32' in o and False)) else v) for k,v in W.items()}
    wte_emb = W['transformer.wte.weight'] if 'embf32' in o else Wt['transformer.wte.weight']
    x=wte_emb[ids].astype(np.float32)
    H=4; dh=16
    slopes=np.array([2**(-8*(i+1)/H) for i in range(H)])
    for l in range(2):
        p=lambda s: Wt[f'transformer.blocks.{l}.{s}']
        hh=R('ln',ln(x,p('ln_1.weight')))
        qkv=R('qkv',hh@p('attn.Wqkv.weight').T)
        q,k,v=qkv[:,:64],qkv[:,64:128],qkv[:,128:]
        q=R('qk',ln(q,p('attn.q_ln.weight'))); k=R('qk',ln(k,p('attn.k_ln.weight')))
        out=np.zeros((T,64),np.float32)
        for hd in range(H):
            qs,ks,vs=q[:,hd*dh:(hd+1)*dh],k[:,hd*dh:(hd+1)*dh],v[:,hd*dh:(hd+1)*dh]
            s=R('scores',qs@ks.T)*(1/4)
            s=R('scores',s)
            s=s+slopes[hd]*(np.arange(T)[None,:]-(T-1))
            s=np.where(np.tril(np.ones((T,T)))>0,s,-np.inf)
            pr=np.exp(s-s.max(-1,keepdims=True)); pr/=pr.sum(-1,keepdims=True)
            pr=R('probs',pr.astype(np.float32))
            out[:,hd*dh:(hd+1)*dh]=pr@vs
        out=R('att',out)
        x=x+R('resadd',out@p('attn.out_proj.weight').T)
        x=R('xres',x)
        hh=R('ln',ln(x,p('ln_2.weight')))
        u=R('up',hh@p('mlp.mlp_up.weight').T)
        u=R('up',gelu(u))
        x=x+R('resadd',u@p('mlp.mlp_down.weight').T)
        x=R('xres',x)
    hh=R('lnf',ln(x,Wt['transformer.ln_f.weight']))
    lg=R('logits',hh@Wt['transformer.wte.weight'].T)
    mism=0; worst=0
    for pos,top in enumerate(ref['top5_every_position']):
        r=lg[pos]; got=np.argsort(-r,kind='stable')[:5]
        if list(got)!=[a for a,_ in top]: mism+=1
        worst=max(worst,max(abs(r[g]-t[1]) for g,t in zip(got,top)))
    return mism,worst,np.abs(lg-reflog).max()
base=['wbf','ln','qkv','att','up']
variants={
 'f32':[], 'f32 check wbf only':['wbf'],
 'engine-like (wbf,ln,qkv,qk,att,up,lnf)':base+['qk','lnf'],
 'engine no lnf round':base+['qk'],
 'engine no qk round':base+['lnf'],
 'engine + embf32':base+['qk','lnf','embf32'],
 'autocast-like':base+['qk','lnf','scores','probs','resadd','logits','embf32'],
 'autocast minus logits':base+['qk','lnf','scores','probs','resadd','embf32'],
 'wbf+embf32 only':['wbf','embf32'],
 'activations only (no wbf)':['ln','qkv','qk','att','up','lnf'],
}
for k,v in variants.items(): print(f'{k:45s} mism={run(v)[0]} worst={run(v)[1]:.4f} maxall={run(v)[2]:.4f}')
print('---per-weight rounding (only that weight bf16, all else f32)')
import itertools
keys=list(W.keys())
orig=dict(W)
def only(ks, acts=[]):
    global W
    saved=dict(W)
    for k in ks: W[k]=bf(orig[k])
    r=run(acts); W=saved; return r
groups={'wte':[k for k in keys if 'wte' in k],'linear':[k for k in keys if 'Wqkv' in k or 'out_proj' in k or 'mlp' in k],'ln':[k for k in keys if 'ln' in k and 'wte' not in k]}
for g,ks in groups.items(): print(g, only(ks))
print('all but wte', only(groups['linear']+groups['ln']))
print('all but wte + engine acts', only(groups['linear']+groups['ln'],['ln','qkv','qk','att','up','lnf']))
