import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { BenchClient } from '../bench/http-client.js';
import { loadModel } from '../src/model/load.js';
import { createServer as createKvpressServer } from '../src/serve/server.js';

/** A node:http server whose handler is `handle`, listening on 127.0.0.1; its URL. */
async function listen(handle: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

test('bench client: chunked and Content-Length bodies, split anywhere, multi-byte characters across chunks, one kept-alive socket', async () => {
  const sockets = new Set<unknown>();
  const bodies: string[] = [];
  // Chunks that cut "é" (2 bytes) and "🦙" (4 bytes) in two, written apart so that they arrive as separate reads.
  const text = Buffer.from('data: {"a":"é🦙"}\n\ndata: [DONE]\n\n');
  const cuts = [0, 11, 15, 20, text.length];
  const { server, url } = await listen((req, res) => {
    sockets.add(req.socket);
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', async () => {
      bodies.push(body);
      if (req.url === '/json') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'nö' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 1; i < cuts.length; i++) {
        res.write(text.subarray(cuts[i - 1], cuts[i]));
        await new Promise((r) => setTimeout(r, 5));
      }
      res.end();
    });
  });
  const client = new BenchClient(url);
  try {
    for (let round = 0; round < 2; round++) {
      const pieces: string[] = [];
      const r = await client.post('/sse', JSON.stringify({ q: 'ünïcode' }), (t) => pieces.push(t));
      assert.equal(r.status, 200);
      assert.equal(r.body, text.toString('utf8'));
      assert.equal(pieces.join(''), r.body);
      assert.ok(pieces.length >= 3, `the body came in ${pieces.length} pieces`);
      const e = await client.post('/json', '{}');
      assert.equal(e.status, 404);
      assert.deepEqual(JSON.parse(e.body), { error: { message: 'nö' } });
    }
    assert.deepEqual(bodies, ['{"q":"ünïcode"}', '{}', '{"q":"ünïcode"}', '{}']);
    assert.equal(sockets.size, 1, 'sequential requests share one kept-alive socket');
  } finally {
    client.close();
    server.closeAllConnections();
    server.close();
  }
});

test('bench client: concurrent requests get a socket each; GET; a connection the server drops fails its request', async () => {
  const { server, url } = await listen((req, res) => {
    if (req.url === '/drop') return req.socket.destroy();
    setTimeout(() => res.end(`${req.method} ${req.url} ${req.headers['content-type'] ?? '-'}`), 20);
  });
  const client = new BenchClient(url);
  try {
    const all = await Promise.all(['/a', '/b', '/c'].map((p) => client.post(p, '')));
    assert.deepEqual(all.map((r) => r.body), ['POST /a application/json', 'POST /b application/json', 'POST /c application/json']);
    assert.equal((await client.get('/metrics')).body, 'GET /metrics -');
    await assert.rejects(client.post('/drop', ''), /closed the connection/);
    assert.equal((await client.post('/d', '')).body, 'POST /d application/json');
  } finally {
    client.close();
    server.closeAllConnections();
    server.close();
  }
});

test('bench client: a streamed completion from kvpress serve reads as through fetch', async () => {
  const model = await loadModel(undefined);
  // An event per token: the same events whenever the steps run.
  const s = createKvpressServer({ model, modelId: 'stories260K', streamIntervalMs: 0 });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  const client = new BenchClient(url);
  try {
    const body = JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 24, temperature: 0, stream: true });
    const viaFetch = await (await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).text();
    const r = await client.post('/v1/chat/completions', body);
    assert.equal(r.status, 200);
    // The same events but for the ids and timestamps each response has of its own.
    const plain = (t: string) => t.replace(/"id":"[^"]+"/g, '"id":""').replace(/"created":\d+/g, '"created":0');
    assert.equal(plain(r.body), plain(viaFetch));
    assert.match(r.body, /data: \[DONE\]\n\n$/);
  } finally {
    client.close();
    await s.shutdown(1000);
  }
});
