import type { ServerResponse } from 'node:http';

/** Server-sent events as OpenAI streams them: `data: {json}` events, ended by `data: [DONE]`. */
export class EventStream {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // proxies such as nginx must not hold events back
    });
    res.flushHeaders();
  }

  send(data: object): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (!this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
}
