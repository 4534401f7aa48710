# Restores the wte payload of the bf16 shard (zeroed to fit the transfer limit): the fixture's payload is
# the float32 wte of mosaic-gpt-tiny rounded to bfloat16 (round to nearest even), byte for byte.
import json, struct, hashlib, numpy as np, sys
root = sys.argv[1]
raw = open(root + '/mosaic-gpt-tiny/model.safetensors', 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]; h = json.loads(raw[8:8 + n])['transformer.wte.weight']
w = np.frombuffer(raw[8 + n + h['data_offsets'][0]:8 + n + h['data_offsets'][1]], dtype=np.float32)
b = w.view(np.uint32).astype(np.uint64); b = ((b + 0x7fff + ((b >> 16) & 1)) >> 16).astype(np.uint16)
p = root + '/mosaic-gpt-tiny-bf16/pytorch_model-00001-of-00002.bin'
with open(p, 'r+b') as f:
    f.seek(int(open(root + '/wte_offset').read())); f.write(b.tobytes())
ok = hashlib.sha256(open(p, 'rb').read()).hexdigest() == open(root + '/shard1.sha256').read().strip()
print('bf16 shard restored, sha256', 'matches' if ok else 'DIFFERS'); sys.exit(0 if ok else 1)
