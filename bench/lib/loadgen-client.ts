/** The orchestrator's handle on the load generator process. */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type {
  ClientSpec,
  CollectResult,
  ConnectResult,
  LoadgenCommand,
  LoadgenMessage,
} from './common';
import { placement } from './cpus';
import { spawnWithFdLimit } from './process';

type Reply<T extends LoadgenMessage['type']> = Extract<LoadgenMessage, { type: T }>;

export class Loadgen {
  private waiting: {
    type: string;
    resolve: (m: LoadgenMessage) => void;
    reject: (e: Error) => void;
  } | null = null;
  private stderr = '';
  /** How it reads subscribed clients' frames (its `ready` message). */
  reader = '';

  private constructor(
    private readonly child: ChildProcess,
    private readonly onProgress: (phase: string, done: number, total: number) => void,
  ) {
    child.stderr?.on('data', (c: Buffer) => {
      this.stderr = (this.stderr + c.toString('utf8')).slice(-4000);
    });
    child.on('message', (raw) => {
      const msg = raw as LoadgenMessage;
      if (msg.type === 'progress') {
        this.onProgress(msg.phase, msg.done, msg.total);
        return;
      }
      const w = this.waiting;
      if (!w) return;
      this.waiting = null;
      if (msg.type === 'error') w.reject(new Error(`loadgen: ${msg.message}`));
      else if (msg.type !== w.type)
        w.reject(new Error(`loadgen: expected ${w.type}, got ${msg.type}`));
      else w.resolve(msg);
    });
    child.on('exit', (code) => {
      const w = this.waiting;
      this.waiting = null;
      w?.reject(new Error(`loadgen exited (${code}): ${this.stderr.trim()}`));
    });
  }

  /** Starts loadgen.js from the transpiled bench directory, with the fd limit raised. */
  static async start(
    buildDir: string,
    onProgress: (phase: string, done: number, total: number) => void,
  ): Promise<Loadgen> {
    // BENCH_LOADGEN_NODE_ARGS: node flags for the load generator, e.g. "--trace-deopt"
    const nodeArgs = (process.env.BENCH_LOADGEN_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawnWithFdLimit(
      process.execPath,
      [...nodeArgs, join(buildDir, 'loadgen.js')],
      { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] },
      placement()?.rest,
    );
    const lg = new Loadgen(child, onProgress);
    lg.reader = (await lg.expect('ready', 15_000)).reader;
    return lg;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private expect<T extends LoadgenMessage['type']>(type: T, timeoutMs: number): Promise<Reply<T>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Error(`loadgen: no ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = {
        type,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Reply<T>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  private request<T extends LoadgenMessage['type']>(
    cmd: LoadgenCommand,
    type: T,
    timeoutMs: number,
  ): Promise<Reply<T>> {
    const reply = this.expect(type, timeoutMs);
    this.child.send(cmd);
    return reply;
  }

  connect(
    spec: ClientSpec,
    n: number,
    concurrency: number,
    timeoutMs: number,
  ): Promise<ConnectResult> {
    return this.request(
      { cmd: 'connect', spec, n, concurrency, timeoutMs },
      'connected',
      timeoutMs + 45_000,
    );
  }

  async arm(seqBase: number, count: number): Promise<void> {
    await this.request({ cmd: 'arm', seqBase, count }, 'armed', 10_000);
  }

  collect(timeoutMs: number): Promise<CollectResult> {
    return this.request({ cmd: 'collect', timeoutMs }, 'collected', timeoutMs + 30_000);
  }

  /** Closes every client and waits for the process to end (killed after 10 s). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    if (this.child.connected) this.child.send({ cmd: 'close' } satisfies LoadgenCommand);
    else this.child.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
  }
}
