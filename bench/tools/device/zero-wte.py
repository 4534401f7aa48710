# Zeroes the wte payload of the bf16 fixture's first shard (it compresses badly and restore.py can rebuild
# it: it is the float32 fixture's wte rounded to bfloat16, round to nearest even). Writes wte_offset and
# shard1.sha256 (of the original shard) beside the fixtures.
import hashlib, json, struct, sys
import numpy as np
root = sys.argv[1]
raw = open(root + '/mosaic-gpt-tiny/model.safetensors', 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]; h = json.loads(raw[8:8 + n])['transformer.wte.weight']
w = np.frombuffer(raw[8 + n + h['data_offsets'][0]:8 + n + h['data_offsets'][1]], dtype=np.float32)
b = w.view(np.uint32).astype(np.uint64); b = ((b + 0x7fff + ((b >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
p = root + '/mosaic-gpt-tiny-bf16/pytorch_model-00001-of-00002.bin'
shard = open(p, 'rb').read()
at = shard.find(b)
if at < 0 or shard.find(b, at + 1) >= 0: sys.exit('zero-wte.py: the bf16 wte payload is not found exactly once in the shard')
open(root + '/shard1.sha256', 'w').write(hashlib.sha256(shard).hexdigest())
open(root + '/wte_offset', 'w').write(str(at))
open(p, 'wb').write(shard[:at] + bytes(len(b)) + shard[at + len(b):])
