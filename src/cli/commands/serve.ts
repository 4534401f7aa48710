import { basename } from 'node:path';
import type { Command } from '../main.js';
import { DEVICE_FLAGS, MODEL_FLAG, openOptions } from '../model-flags.js';
import { openForInference } from '../../generate/open.js';
import { hasOwnChatTemplate, MptServer } from '../../serve/index.js';
import { UserError } from '../../util/errors.js';

export const serveCommand: Command = {
  spec: {
    name: 'serve',
    summary: 'Serve a model over an OpenAI-compatible HTTP API',
    usage: 'mpt serve [--model M] [--host 127.0.0.1] [--port 8000] [options]',
    flags: {
      ...MODEL_FLAG,
      host: { type: 'string', placeholder: 'HOST', default: '127.0.0.1', description: 'Address to listen on (0.0.0.0: every interface; mind --api-key then).' },
      port: { type: 'integer', short: 'p', default: 8000, description: 'Port to listen on (0: any free port).' },
      'served-model-name': { type: 'string', placeholder: 'NAME', description: 'The model name /v1/models lists and requests pass as "model" (default: --model as given, or mpt-demo).' },
      'max-tokens-default': { type: 'integer', placeholder: 'N', default: 256, description: 'max_tokens for requests that give none (capped by what the context leaves).' },
      'max-batch': { type: 'integer', placeholder: 'N', default: 8, description: 'Most prompts run together: per request, and waiting requests with the same settings joined into one batch (1: one at a time).' },
      'api-key': { type: 'string', placeholder: 'KEY', description: 'Require "Authorization: Bearer KEY" on /v1/* (default: $MPT_API_KEY; unset: no check).' },
      'allow-origin': { type: 'string', placeholder: 'ORIGIN', description: 'Let web pages from ORIGIN (e.g. http://localhost:5173, or * for any) call the API from a browser (CORS). Default: no CORS.' },
      ...DEVICE_FLAGS,
    },
    details: `Endpoints:
  GET  /v1/models             the served model
  POST /v1/completions        prompt: a string, strings, token ids or lists of ids; max_tokens,
                              temperature, top_p, top_k, repetition_penalty, seed, stop, stream,
                              echo and logprobs (0–20; log-softmax of the raw logits; not streamed),
                              so lm-evaluation-harness's local-completions can score prompts
  POST /v1/chat/completions   messages, rendered with a plain-text template ("User: …", "Assistant: …",
                              a system message on top); generation stops at "\\nUser:";
                              logprobs: true with top_logprobs
  GET  /health                200 while serving
Not supported (refused by name): n > 1, suffix, best_of, logit_bias, presence and frequency
penalties (use repetition_penalty), tools, stream together with echo or logprobs.
Requests run in arrival order, one batch at a time (each answered when its own rows end); a client
that disconnects stops its generation.
Ctrl-C (SIGINT) or SIGTERM finishes the requests in progress, then exits; a second one exits at once.

Examples:
  mpt serve --model mosaicml/mpt-1b-redpajama-200b --port 8000
  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
    -d '{"prompt": "The history of", "max_tokens": 32, "temperature": 0}'`,
  },
  async run(args) {
    const f = args.flags;
    const port = f.port as number, maxTokensDefault = f['max-tokens-default'] as number, maxBatch = f['max-batch'] as number;
    if (!(port >= 0 && port <= 65535)) throw new UserError(`--port must be in 0…65535, got ${port}`);
    if (maxTokensDefault < 1) throw new UserError(`--max-tokens-default must be ≥ 1, got ${maxTokensDefault}`);
    if (maxBatch < 1) throw new UserError(`--max-batch must be ≥ 1, got ${maxBatch}`);
    const apiKey = (f['api-key'] as string | undefined) ?? process.env.MPT_API_KEY;
    if (apiKey === '') throw new UserError('--api-key is empty: give a key, or leave it out to serve without one');
    const model = f.model as string | undefined;
    const modelId = (f['served-model-name'] as string | undefined) ?? (model ?? 'mpt-demo');
    const { model: loaded, tokenizer, folder } = await openForInference(openOptions(args));
    if (hasOwnChatTemplate(folder.dir)) {
      process.stderr.write('mpt: note: the model\'s tokenizer_config.json has a chat_template; /v1/chat/completions uses mpt-ts\'s plain-text template instead (see --help)\n');
    }
    const allowOrigin = f['allow-origin'] as string | undefined;
    const server = new MptServer({ model: loaded, tokenizer, modelId, maxTokensDefault, maxBatch, apiKey, allowOrigin });
    let url: string;
    try {
      url = await server.listen(port, f.host as string);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') throw new UserError(`port ${port} on ${f.host} is already in use: pick another with --port`);
      if (code === 'EACCES') throw new UserError(`no permission to listen on ${f.host}:${port} (ports below 1024 need privileges)`);
      if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UserError(`--host ${f.host} is not an address of this machine`);
      throw error;
    }
    process.stdout.write(`mpt: serving ${modelId} (${basename(model ?? 'mpt-demo')}, ${loaded.backend.name}) at ${url}/v1${apiKey ? ' (API key required)' : ''}\n`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        process.stderr.write(`mpt: ${signal}: finishing ${server.queue.size} request(s) in progress, then exiting (again to exit now)\n`);
        process.once(signal as NodeJS.Signals, () => process.exit(130));
        void server.close().then(resolve);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  },
};
