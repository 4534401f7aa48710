// The README's library example, through the package's entry point, on the embedded default model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openForInference, generate } from '../src/index.js';

test('the README library example runs: generate with streaming, then logits of every position', async () => {
  const { model, tokenizer } = await openForInference({ device: 'cpu' });
  const streamed: string[] = [];
  const [result] = await generate(model, tokenizer, [tokenizer.encode('The history of')], {
    maxNewTokens: 8, temperature: 0.8, topP: 0.95, seed: 1, eosId: tokenizer.eosId,
    onText: (_row, text) => streamed.push(text),
  });
  assert.equal(streamed.join(''), result.text);
  assert.ok(result.ids.length > 0 && result.ids.length <= 8);
  const ids = Int32Array.from(tokenizer.encode('Hello world'));
  const logits = model.backend.download(model.forward(ids, model.newCache(1, ids.length)));
  assert.equal(logits.length, ids.length * model.config.vocabSize);
});
