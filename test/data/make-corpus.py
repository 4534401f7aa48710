#!/usr/bin/env python3
"""Makes the small test corpus in corpus/ (committed; rerun only to change it).

RedPajama layout, one folder per source, each input format once: plain JSONL, .jsonl.gz,
.jsonl.zst (made with the zstd CLI), and plain text. Documents are real text (license paragraphs,
code, the tokenizer fixture's unicode strings) of very different lengths, so that packing into short
samples splits documents across samples. Extra fields are metadata."""
import gzip, json, os, subprocess, shutil

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, 'corpus')
shutil.rmtree(out, ignore_errors=True)
cases = [c['text'] for c in json.load(open('/work/shared/fixtures/tokenizer-cases.json'))['cases']]
apache = open('/usr/share/common-licenses/Apache-2.0').read().split('\n\n')
mpl = open('/usr/share/common-licenses/MPL-2.0').read().split('\n\n')

def write_jsonl(path, docs, opener=open):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with opener(path, 'wt', encoding='utf-8') as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({'text': d, 'meta': {'n': i}, 'source_url': f'doc-{i}'}, ensure_ascii=(i % 2 == 0)) + '\n')

write_jsonl(os.path.join(out, 'c4', 'c4-train.00000.jsonl'), apache[:25])
write_jsonl(os.path.join(out, 'wikipedia', 'wiki.jsonl.gz'.replace('.gz', '')), mpl[:30])
with open(os.path.join(out, 'wikipedia', 'wiki.jsonl'), 'rb') as f:
    data = f.read()
os.remove(os.path.join(out, 'wikipedia', 'wiki.jsonl'))
with gzip.open(os.path.join(out, 'wikipedia', 'wiki.jsonl.gz'), 'wb') as f:
    f.write(data)
write_jsonl(os.path.join(out, 'stackexchange', 'se.jsonl'), cases)
subprocess.run(['zstd', '-q', '--rm', '-19', os.path.join(out, 'stackexchange', 'se.jsonl')], check=True)
os.makedirs(os.path.join(out, 'book', 'sub'), exist_ok=True)
open(os.path.join(out, 'book', 'a.txt'), 'w').write('\n\n'.join(mpl[30:60]))
open(os.path.join(out, 'book', 'sub', 'b.txt'), 'w').write('\n\n'.join(apache[25:]))
src = open(os.path.join(here, '..', '..', 'src', 'data', 'packer.ts')).read()
write_jsonl(os.path.join(out, 'github', 'code.jsonl'), [src, src[:500], 'x = 1\n', ''])
