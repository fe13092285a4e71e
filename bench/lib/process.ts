/** Child processes, ports and HTTP for the orchestrator. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sleep } from './common';
import { placement } from './cpus';

/** Open-files limit asked for every server and load generator process. */
export const WANTED_FD_LIMIT = 65536;

/**
 * Spawns `cmd args` through bash with the open-files limit raised: to WANTED_FD_LIMIT when
 * allowed, else to the hard limit. A child inherits its limit from the spawning process,
 * and Node cannot call setrlimit itself, so the shell's `ulimit` does it just before exec.
 * Stdio (an IPC channel included) passes through the exec unchanged. `cpus`: a taskset CPU
 * list the child is confined to (see cpus.ts); without it, the child inherits this
 * process's.
 */
export function spawnWithFdLimit(
  cmd: string,
  args: string[],
  opts: SpawnOptions,
  cpus?: string,
): ChildProcess {
  const script =
    `ulimit -n ${WANTED_FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; ` +
    (cpus ? `exec taskset -c ${cpus} "$0" "$@"` : 'exec "$0" "$@"');
  return spawn('bash', ['-c', script, cmd, ...args], opts);
}

/** A long-running child (a server under test) with the tail of its output kept for errors. */
export class ManagedProcess {
  readonly exited: Promise<number | null>;
  private readonly tail: string[] = [];
  private exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    const keep = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        this.tail.push(line);
        if (this.tail.length > 40) this.tail.shift();
      }
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    // BENCH_SERVER_LOG=<dir>: all of it, e.g. what `--trace-gc` or `--trace-deopt` print
    const dir = process.env.BENCH_SERVER_LOG;
    if (dir) {
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${name}-${child.pid ?? 'unknown'}.log`);
      const log = createWriteStream(file);
      log.on('error', (e) => console.error(`BENCH_SERVER_LOG: ${file}: ${e.message}`));
      child.stdout?.on('data', (chunk: Buffer) => log.write(chunk));
      child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
      child.on('close', () => log.end());
    }
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      });
      child.on('error', (err) => {
        this.tail.push(String(err));
        this.exitCode = -1;
        resolve(-1);
      });
    });
  }

  /** Starts a server under test, on the servers' CPU when the suite is pinned (cpus.ts). */
  static start(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): ManagedProcess {
    const child = spawnWithFdLimit(
      cmd,
      args,
      { stdio: ['ignore', 'pipe', 'pipe'], ...opts },
      placement()?.server,
    );
    return new ManagedProcess(name, child);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  output(lines = 15): string {
    return this.tail.slice(-lines).join('\n');
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** The kernel's range of ephemeral ports (the local ports of outgoing connections). */
export function ephemeralRange(
  text = readIfExists('/proc/sys/net/ipv4/ip_local_port_range'),
): [number, number] {
  const [low, high] = (text ?? '').trim().split(/\s+/).map(Number);
  return Number.isInteger(low) && Number.isInteger(high) && low > 1024 && high >= low
    ? [low, high]
    : [32768, 60999];
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Resolves true if a server can listen on the port on every address (0.0.0.0). */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
}

/**
 * A port for a server the suite starts, below the ephemeral range: a port the kernel hands
 * out for `listen(0)` comes from that range, and before the server binds it (seconds
 * later, after its start-up) an outgoing connection of any process may take it as its
 * local port (seen here: "EADDRINUSE 0.0.0.0:39215" after a 10 000-connection target, and
 * ours' figures were lost for that run).
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  const floor = Math.max(1025, low - 12_000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = floor + Math.floor(Math.random() * (low - floor));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port between ${floor} and ${low - 1}`);
}

/**
 * `timeout` makes Node's agent honour the server's `Keep-Alive: timeout=N` hint: an idle
 * socket is closed by this side one second before the server would close it (without a
 * `timeout` of its own, Node 20's agent ignores the hint and keeps idle sockets until the
 * server's close arrives, which may cross a request sent on them: "socket hang up").
 * A request's own `setTimeout` replaces it while the request is in flight.
 */
const agent = new Agent({ keepAlive: true, maxSockets: 64, timeout: 60_000 });
/** For the one retry of a request whose reused socket was reset: a new connection. */
const freshAgent = new Agent({ keepAlive: false });

/**
 * Leaves `count` idle keep-alive connections to `base` in the agent, so that `count`
 * requests sent at once leave at once. Without it, a burst opens new connections, and a
 * Node server accepts one connection per event-loop turn (libuv): behind a fan-out that
 * holds the loop for tens of ms, the burst's requests would reach the server one by one.
 */
export async function openConnections(base: string, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, () => http('GET', `${base}/health`)));
}

export interface HttpResponse {
  status: number;
  body: string;
}

/**
 * One HTTP request over a keep-alive agent; rejects on network errors and after timeoutMs.
 * A request that fails with ECONNRESET on a reused socket (the server closed it as idle
 * just as it was reused) is sent once more on a new connection, as the Node docs advise
 * (not on another pooled socket, which may be as old as the first).
 */
export async function http(
  method: string,
  url: string,
  opts: { body?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<HttpResponse> {
  try {
    return await httpOnce(method, url, opts);
  } catch (err) {
    if ((err as { reusedSocket?: boolean }).reusedSocket !== true) throw err;
    return httpOnce(method, url, opts, freshAgent);
  }
}

/**
 * A `PATCH` of one document's `title` at `url` with its `version` (the REST API's
 * optimistic check), as a client that must not lose or double a change sends it; resolves
 * to the document's new version. When the request gets no answer at all (the connection
 * failed), the change may have committed or not: the document is read, and the change is
 * sent again only if its title is not there (a second send after a commit would be a 409,
 * its version being stale; a 409 to the second send is checked the same way). Any other
 * answer but 200 rejects, the body's start in the message.
 */
export async function patchTitle(
  url: string,
  title: string,
  version: number,
  headers: Record<string, string>,
): Promise<number> {
  const body = JSON.stringify({ title, version });
  let res: HttpResponse;
  try {
    res = await http('PATCH', url, { body, headers });
  } catch (err) {
    const committed = await versionHolding(url, title, headers);
    if (committed !== null) return committed;
    res = await http('PATCH', url, { body, headers }).catch((again: Error) => {
      throw new Error(`PATCH: ${(err as Error).message}, then ${again.message}`);
    });
    if (res.status === 409) {
      const after = await versionHolding(url, title, headers);
      if (after !== null) return after;
    }
  }
  if (res.status !== 200) throw new Error(`PATCH: HTTP ${res.status} ${res.body.slice(0, 300)}`);
  return (JSON.parse(res.body) as { version: number }).version;
}

/** The version of the document at `url` when its title is `title`, else null. */
async function versionHolding(
  url: string,
  title: string,
  headers: Record<string, string>,
): Promise<number | null> {
  const res = await http('GET', url, { headers });
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const doc = JSON.parse(res.body) as { title: string; version: number };
  return doc.title === title ? doc.version : null;
}

function httpOnce(
  method: string,
  url: string,
  opts: { body?: string; headers?: Record<string, string>; timeoutMs?: number },
  via: Agent = agent,
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...opts.headers };
    if (opts.body !== undefined) {
      headers['content-length'] = Buffer.byteLength(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    const req = request(url, { method, headers, agent: via }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () =>
      req.destroy(new Error(`${method} ${url}: timeout`)),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ECONNRESET' && req.reusedSocket
          ? Object.assign(err, { reusedSocket: true })
          : err,
      );
    });
    req.end(opts.body);
  });
}

/**
 * Polls check() every intervalMs until it returns true; false after timeoutMs or as soon as
 * `alive()` says the process under test is gone.
 */
export async function waitUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  alive: () => boolean = () => true,
  intervalMs = 200,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && alive()) {
    try {
      if (await check()) return true;
    } catch {
      // not up yet
    }
    await sleep(intervalMs);
  }
  return false;
}

export interface ChildRun {
  code: number | null;
  timedOut: boolean;
  output: string;
  elapsedMs: number;
}

/**
 * Runs a command to completion with a time bound, collecting stdout+stderr (the last
 * maxChars). onLine, when given, sees each output line as it comes.
 */
export function runToCompletion(
  cmd: string,
  args: string[],
  opts: {
    cwd: string;
    env?: NodeJS.ProcessEnv;
    timeoutMs: number;
    onLine?: (line: string) => void;
  },
  maxChars = 40_000,
): Promise<ChildRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawnWithFdLimit(
      cmd,
      args,
      {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      },
      // the routing and write-path benches (and the app's build) get every CPU back
      placement()?.all,
    );
    let output = '';
    let partial = '';
    const take = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-maxChars);
      if (opts.onLine) {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) opts.onLine(l);
      }
    };
    child.stdout?.on('data', take);
    child.stderr?.on('data', take);
    let timedOut = false;
    // detached: the child leads its own process group, so the whole group (npm → node → …)
    // can be ended by its id when the time bound passes.
    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        if (child.pid) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), 3000).unref();
    }, opts.timeoutMs);
    let finished = false;
    const finish = (code: number | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (partial && opts.onLine) opts.onLine(partial);
      resolve({ code, timedOut, output, elapsedMs: Date.now() - started });
    };
    // 'close', not 'exit': it comes after the output pipes are drained.
    child.on('close', (code) => finish(code));
    child.on('error', (err) => {
      output += String(err);
      finish(-1);
    });
  });
}
