import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/model/load.js';

export interface RunningServer {
  url: string;
  proc: ChildProcess;
  stderr(): string;
  /** SIGTERM and the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `kvpress serve --port 0 …` in a child process and waits for its address. */
export function startServer(args: string[] = [], env: Record<string, string> = {}): Promise<RunningServer> {
  const proc = spawn(process.execPath, [join(packageRoot(), 'bin', 'kvpress.js'), 'serve', '--port', '0', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`kvpress serve did not start in 60 s:\n${err}`)); }, 60_000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = / on (http:\/\/\S+) \(/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1], proc, stderr: () => err,
          stop: async () => {
            if (proc.exitCode === null) proc.kill('SIGTERM');
            return exited;
          },
        });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`kvpress serve exited with ${code}:\n${err}`)); });
  });
}

/** Reads a server-sent event stream to its end: the parsed data events, and whether [DONE] came. */
export async function readSse(res: Response): Promise<{ events: any[]; done: boolean }> {
  const text = await res.text();
  const events: any[] = [];
  let done = false;
  for (const block of text.split('\n\n')) {
    const line = block.trim();
    if (!line.startsWith('data: ')) continue;
    const data = line.slice(6);
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data));
  }
  return { events, done };
}

/** POSTs a JSON body and returns the JSON answer; a status other than 2xx fails with the body. */
export async function postJson(url: string, path: string, body: unknown): Promise<any> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}: ${await res.text()}`);
  return res.json();
}
