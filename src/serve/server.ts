import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import type { TextDecoding } from '../generate/generate.js';
import type { MptModel } from '../model/mpt.js';
import { ApiError } from './api-error.js';
import { readJsonBody } from './body.js';
import { parseChatRequest } from './chat-request.js';
import { parseCompletionRequest } from './completion-request.js';
import { asBody } from './fields.js';
import { answerGeneration, sendJson, type GenerationContext } from './generation.js';
import { GenerationQueue } from './queue.js';
import type { ServedModel } from './requests.js';
import { chatShape, completionShape, type Usage } from './shapes.js';

/** What the server needs of a tokenizer: encoding prompts, decoding replies as they come, the EOS id. */
export interface ServeTokenizer extends TextDecoding {
  encode(text: string): number[];
  eosId: number | null;
  /** A token's bytes (logprobs name each token by its text); throws for an id with no token. */
  tokenBytes(id: number): Uint8Array;
}

export interface ServeOptions {
  model: MptModel;
  tokenizer: ServeTokenizer;
  /** The name /v1/models lists and requests' `model` must match (when they give one). */
  modelId: string;
  /** max_tokens when a request gives none (default 256; capped by what the context leaves). */
  maxTokensDefault?: number;
  /** The most rows (prompts) one generate call runs: a request's prompts, plus waiting requests that may join (default 8). */
  maxBatch?: number;
  /** When set, /v1/* requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest request body accepted, in bytes (default 2 MiB). */
  maxBodyBytes?: number;
  /**
   * CORS: the origin browsers may call from (`*` for any), for web pages that use the API directly.
   * Unset: no CORS headers, so browsers keep other sites' pages from calling a local server.
   */
  allowOrigin?: string;
  /** Where the one line per request goes (default: stderr). */
  log?: (line: string) => void;
}

/** Why a request's generation was stopped: its client closed the connection. */
export class ClientGone extends Error {
  constructor() {
    super('the client closed the connection');
    this.name = 'ClientGone';
  }
}

interface Route {
  methods: Record<string, (req: IncomingMessage, res: ServerResponse, signal: AbortSignal) => Promise<Usage | void>>;
}

/**
 * An OpenAI-compatible HTTP server in front of one model: GET /v1/models, POST /v1/completions,
 * POST /v1/chat/completions, GET /health. Requests take turns at the model through a queue
 * (GenerationQueue), which batches compatible waiting requests into one generate call.
 */
export class MptServer {
  readonly http: Server;
  readonly queue: GenerationQueue;
  private readonly served: ServedModel;
  private readonly context: GenerationContext;
  private readonly routes: Map<string, Route>;
  private readonly active = new Set<ServerResponse>();
  private readonly log: (line: string) => void;
  private closing: Promise<void> | null = null;
  private readonly started = Math.floor(Date.now() / 1000);

  constructor(private readonly options: ServeOptions) {
    const { model, tokenizer } = options;
    const maxBatch = options.maxBatch ?? 8;
    if (!(Number.isInteger(maxBatch) && maxBatch >= 1)) throw new RangeError(`maxBatch must be an integer ≥ 1, got ${maxBatch}`);
    this.queue = new GenerationQueue(model, tokenizer, maxBatch);
    this.served = {
      id: options.modelId,
      maxSeqLen: model.config.maxSeqLen,
      vocabSize: model.config.vocabSize,
      maxTokensDefault: options.maxTokensDefault ?? 256,
      maxPromptsPerRequest: maxBatch,
      encode: (text) => tokenizer.encode(text),
    };
    this.context = { queue: this.queue, modelId: options.modelId, eosId: tokenizer.eosId, tokenizer };
    this.log = options.log ?? ((line) => process.stderr.write(line + '\n'));
    this.routes = new Map<string, Route>([
      ['/health', { methods: { GET: async (_req, res) => sendJson(res, 200, { status: 'ok' }) } }],
      ['/v1/models', { methods: { GET: async (_req, res) => sendJson(res, 200, { object: 'list', data: [this.modelCard()] }) } }],
      ['/v1/completions', { methods: { POST: (req, res, signal) => this.generation(req, res, signal, 'completion') } }],
      ['/v1/chat/completions', { methods: { POST: (req, res, signal) => this.generation(req, res, signal, 'chat') } }],
    ]);
    this.http = createServer((req, res) => void this.handle(req, res));
  }

  /** Start listening; resolves with the base URL (port 0 picks a free port). */
  listen(port = 8000, host = '127.0.0.1'): Promise<string> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        const address = this.http.address() as AddressInfo;
        const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        resolve(`http://${shownHost}:${address.port}`);
      });
    });
  }

  /**
   * Graceful shutdown: stop accepting connections, let the requests in progress (and those queued)
   * finish, then close. After `graceMs` the remaining connections are cut, which aborts their runs.
   */
  close(graceMs = 30_000): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.http.closeIdleConnections();
      const timer = setTimeout(() => this.http.closeAllConnections(), graceMs);
      while (this.active.size > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      clearTimeout(timer);
      this.http.closeAllConnections(); // only idle keep-alive connections are left
      await closed;
    })();
    return this.closing;
  }

  private modelCard() {
    return { id: this.served.id, object: 'model', created: this.started, owned_by: 'mpt-ts', max_model_len: this.served.maxSeqLen };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    this.active.add(res);
    const controller = new AbortController();
    res.on('close', () => {
      this.active.delete(res);
      if (!res.writableFinished) controller.abort(new ClientGone());
    });
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const origin = this.options.allowOrigin;
    if (origin) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      if (origin !== '*') res.setHeader('Vary', 'Origin');
    }
    let usage: Usage | void = undefined;
    let note = '';
    try {
      if (this.closing) {
        res.shouldKeepAlive = false;
        throw new ApiError(503, 'the server is shutting down', 'service_unavailable', null, 'shutting_down');
      }
      const { route, name } = this.route(path);
      if (!route) throw new ApiError(404, `invalid URL (${method} ${path}): this server has ${[...this.routes.keys()].join(', ')}`, 'invalid_request_error', null, 'unknown_url');
      if (method === 'OPTIONS' && this.options.allowOrigin) {
        this.preflight(res, Object.keys(route.methods));
        return;
      }
      const handler = route.methods[method];
      if (!handler) {
        res.setHeader('Allow', Object.keys(route.methods).join(', '));
        throw new ApiError(405, `${method} is not allowed on ${name}: use ${Object.keys(route.methods).join(' or ')}`, 'invalid_request_error', null, 'method_not_allowed');
      }
      if (path.startsWith('/v1/')) this.authorize(req, res);
      usage = await handler(req, res, controller.signal);
    } catch (error) {
      if (controller.signal.aborted) {
        note = 'client closed the connection';
      } else {
        const apiError = error instanceof ApiError ? error : new ApiError(500, `internal error: ${(error as Error)?.message ?? error}`, 'server_error');
        if (!(error instanceof ApiError)) note = (error as Error)?.stack ?? String(error);
        // A body we stopped reading cannot be followed by another request on this connection.
        if (apiError.status === 413) res.shouldKeepAlive = false;
        sendJson(res, apiError.status, apiError.toJSON());
        if (!note) note = apiError.message;
      }
    }
    const status = controller.signal.aborted ? 499 : res.statusCode;
    const tokens = usage ? ` ${usage.prompt_tokens}+${usage.completion_tokens} tokens` : '';
    const ms = (performance.now() - started).toFixed(0);
    this.log(`${new Date().toISOString()} ${method} ${path} ${status}${tokens} ${ms} ms${note ? ` (${note})` : ''}`);
  }

  private route(path: string): { route?: Route; name: string } {
    const exact = this.routes.get(path);
    if (exact) return { route: exact, name: path };
    // GET /v1/models/{id}: the one model, or 404 for any other name (ids may contain slashes).
    if (path.startsWith('/v1/models/')) {
      const raw = path.slice('/v1/models/'.length);
      let id: string;
      try {
        id = decodeURIComponent(raw);
      } catch {
        id = raw; // malformed %-escapes: no model has such a name, so the lookup below answers 404
      }
      return {
        name: '/v1/models/{model}',
        route: {
          methods: {
            GET: async (_req, res) => {
              if (id !== this.served.id) throw new ApiError(404, `the model \`${id}\` does not exist: this server serves \`${this.served.id}\``, 'not_found_error', 'model', 'model_not_found');
              sendJson(res, 200, this.modelCard());
            },
          },
        },
      };
    }
    return { name: path };
  }

  /** A browser's CORS preflight: which methods and headers the real request may use. Not logged. */
  private preflight(res: ServerResponse, methods: string[]): void {
    res.writeHead(204, {
      'Access-Control-Allow-Methods': [...methods, 'OPTIONS'].join(', '),
      'Access-Control-Allow-Headers': 'Authorization, Content-Type',
      'Access-Control-Max-Age': '600',
    });
    res.end();
  }

  private authorize(req: IncomingMessage, res: ServerResponse): void {
    const key = this.options.apiKey;
    if (!key) return;
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7).trim() : '');
    const wanted = Buffer.from(key);
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      throw new ApiError(401, header ? 'incorrect API key provided' : 'missing API key: send "Authorization: Bearer <key>"', 'invalid_request_error', null, 'invalid_api_key');
    }
  }

  private async generation(req: IncomingMessage, res: ServerResponse, signal: AbortSignal, kind: 'completion' | 'chat'): Promise<Usage> {
    const body = asBody(await readJsonBody(req, this.options.maxBodyBytes ?? 2 * 1024 * 1024));
    if (kind === 'completion') return answerGeneration(parseCompletionRequest(body, this.served), completionShape, this.context, res, signal);
    return answerGeneration(parseChatRequest(body, this.served), chatShape, this.context, res, signal, true);
  }
}
