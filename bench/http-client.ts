/**
 * The serve benchmark's HTTP client: HTTP/1.1 POSTs over kept-alive sockets of node:net, the
 * response body handed over as text while it arrives. It does what a load generator does (wrk,
 * h2load) and no more, because the benchmark charges every client cost to the server: a request
 * through node:http's client took 0.3–0.45 ms more from send to the server's handler than one
 * written to a socket as here, when the client thread had slept through a 40 ms answer (0.65 vs
 * 1.06 ms minimum round trip of an empty server-sent-events answer, 35 alternations), about 1 %
 * of a stories260K answer. GET and POST with a JSON body; only what the benchmark's server sends is
 * understood: a status line, headers, then a body framed by Content-Length or chunked transfer coding.
 */
import { connect, type Socket } from 'node:net';

export interface BenchResponse {
  status: number;
  /** The whole body, as text. */
  body: string;
}

const CRLF = Buffer.from('\r\n');

/** One kept-alive connection: one request at a time. */
class Connection {
  private readonly socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private current: {
    resolve: (r: BenchResponse) => void;
    reject: (e: Error) => void;
    onText: (text: string) => void;
    status: number;
    /** Body bytes still to come in this chunk / of a Content-Length body; -1: reading headers. */
    left: number;
    chunked: boolean;
    body: string;
    decoder: TextDecoder;
  } | null = null;
  /** The socket was closed or failed: not reusable. */
  closed = false;
  readonly ready: Promise<void>;
  /** The Host header's value. */
  private readonly authority: string;

  constructor(host: string, port: number) {
    this.authority = `${host}:${port}`;
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      try {
        this.parse();
      } catch (e) {
        this.fail(e as Error);
      }
    });
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => this.fail(new Error('the server closed the connection')));
  }

  request(method: 'GET' | 'POST', path: string, body: string, onText: (text: string) => void): Promise<BenchResponse> {
    if (this.current) throw new Error('internal error: a bench connection takes one request at a time');
    return new Promise((resolve, reject) => {
      this.current = { resolve, reject, onText, status: 0, left: -1, chunked: false, body: '', decoder: new TextDecoder() };
      const type = method === 'POST' ? 'Content-Type: application/json\r\n' : '';
      this.socket.write(`${method} ${path} HTTP/1.1\r\nHost: ${this.authority}\r\n${type}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private fail(e: Error): void {
    this.closed = true;
    const c = this.current;
    this.current = null;
    c?.reject(e);
  }

  private parse(): void {
    const c = this.current;
    if (!c) return;
    if (c.left === -1) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.toString('latin1', 0, end).split('\r\n');
      this.buf = this.buf.subarray(end + 4);
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(head[0]);
      if (!status) throw new Error(`not an HTTP/1.1 response: ${head[0]}`);
      c.status = Number(status[1]);
      const header = (name: string) => head.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim().toLowerCase();
      c.chunked = header('transfer-encoding') === 'chunked';
      c.left = c.chunked ? 0 : Number(header('content-length') ?? NaN);
      if (!c.chunked && !Number.isInteger(c.left)) throw new Error('a response with neither chunked coding nor Content-Length');
      if (!c.chunked && c.left === 0) return this.done();
    }
    for (;;) {
      if (c.left > 0) {
        const n = Math.min(c.left, this.buf.length);
        if (n === 0) return;
        this.text(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        c.left -= n;
        if (c.left > 0) return;
        if (!c.chunked) return this.done();
        // The CRLF after a chunk's data.
        c.left = -2;
      }
      if (c.left === -2) {
        if (this.buf.length < 2) return;
        if (!this.buf.subarray(0, 2).equals(CRLF)) throw new Error('a chunk not followed by CRLF');
        this.buf = this.buf.subarray(2);
        c.left = 0;
      }
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return;
      const size = parseInt(this.buf.toString('latin1', 0, eol), 16);
      if (!Number.isInteger(size) || size < 0) throw new Error(`a bad chunk size: ${this.buf.toString('latin1', 0, eol)}`);
      if (size === 0) {
        // The last chunk, then the (empty) trailer's CRLF.
        if (this.buf.length < eol + 4) return;
        this.buf = this.buf.subarray(eol + 4);
        return this.done();
      }
      this.buf = this.buf.subarray(eol + 2);
      c.left = size;
    }
  }

  private text(bytes: Buffer): void {
    const c = this.current!;
    const t = c.decoder.decode(bytes, { stream: true });
    c.body += t;
    if (t) c.onText(t);
  }

  private done(): void {
    const c = this.current!;
    this.current = null;
    c.resolve({ status: c.status, body: c.body });
  }
}

/** Connections to one server, reused one request at a time; as many as requests run at once. */
export class BenchClient {
  private readonly free: Connection[] = [];
  private readonly host: string;
  private readonly port: number;

  constructor(url: string) {
    const u = new URL(url);
    if (u.protocol !== 'http:') throw new Error(`the bench client speaks plain HTTP, got ${url}`);
    this.host = u.hostname;
    this.port = Number(u.port || 80);
  }

  /** POSTs `body` (JSON text) to `path`; `onText` sees the body's text as it arrives. */
  post(path: string, body: string, onText: (text: string) => void = () => {}): Promise<BenchResponse> {
    return this.request('POST', path, body, onText);
  }

  get(path: string): Promise<BenchResponse> {
    return this.request('GET', path, '', () => {});
  }

  private async request(method: 'GET' | 'POST', path: string, body: string, onText: (text: string) => void): Promise<BenchResponse> {
    let conn = this.free.pop();
    // A socket the server closed while it waited is not used again.
    while (conn?.closed) conn = this.free.pop();
    if (!conn) {
      conn = new Connection(this.host, this.port);
      await conn.ready;
    }
    const r = await conn.request(method, path, body, onText);
    if (!conn.closed) this.free.push(conn);
    return r;
  }

  close(): void {
    for (const c of this.free.splice(0)) c.close();
  }
}
