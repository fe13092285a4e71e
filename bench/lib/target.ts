/** What run.ts needs from each system under test. */
import { join } from 'node:path';
import { changePayload } from './common';
import type { ClientSpec } from './common';
import { freePort, http, ManagedProcess, waitUntil } from './process';

export interface SuiteContext {
  /** Repository root. */
  root: string;
  /** Where the bench's own TypeScript was transpiled to (plain `node` runs it). */
  buildDir: string;
  quick: boolean;
  /** A line for the progress display. */
  log(message: string): void;
}

export interface MemorySample {
  rssBytes: number;
  /** V8 heap in use; null when the target cannot tell (Nchan). */
  heapUsedBytes: number | null;
  /** Whether a full GC ran just before the sample. */
  afterGc: boolean;
}

export interface RunningTarget {
  /** The server's pid: its CPU time (and that of its descendants) is what gets measured. */
  readonly pid: number;
  /** Where the publisher sends its requests (`http://127.0.0.1:<port>`). */
  readonly base: string;
  readonly client: ClientSpec;
  /** Things the report should say about this run (how it was started, what was skipped). */
  readonly notes: string[];
  /** Makes `changes` changes publishable (ours: creates the tasks). Runs before clients connect. */
  prepare(changes: number): Promise<void>;
  /** Publishes change `seq`; its payload carries marker(seq) stamped just before sending. */
  publish(seq: number): Promise<void>;
  memory(): Promise<MemorySample>;
  alive(): boolean;
  /** The tail of the server's output, for error messages. */
  output(): string;
  stop(): Promise<void>;
}

export interface Target {
  readonly name: string;
  readonly label: string;
  /** null when the target can run on this machine, else the reason it is skipped. */
  check(ctx: SuiteContext): Promise<string | null>;
  /** Starts a fresh server; throws (with the reason) when it does not come up. */
  start(ctx: SuiteContext): Promise<RunningTarget>;
}

/**
 * A bench-owned Node server (bare ws, Socket.IO) run from the transpiled bench directory:
 * `POST /publish` broadcasts its body, `GET /memory?gc=1` answers process.memoryUsage()
 * after a full GC (the process runs with --expose-gc).
 */
export async function startNodeProgram(
  ctx: SuiteContext,
  program: {
    name: string;
    /** Path of the program, relative to the transpiled bench directory. */
    script: string;
    env: Record<string, string>;
    client: (port: number) => ClientSpec;
  },
): Promise<RunningTarget> {
  const { name, client } = program;
  const port = await freePort();
  const script = join(ctx.buildDir, program.script);
  const proc = ManagedProcess.start(name, process.execPath, ['--expose-gc', script], {
    cwd: ctx.root,
    env: { ...process.env, ...program.env, PORT: String(port) },
  });
  const base = `http://127.0.0.1:${port}`;
  const up = await waitUntil(
    async () => (await http('GET', `${base}/memory`)).status === 200,
    15_000,
    () => proc.running,
  );
  if (!up) {
    await proc.stop();
    throw new Error(`${name} did not start on port ${port}:\n${proc.output()}`);
  }
  return {
    pid: proc.pid,
    base,
    client: client(port),
    notes: [],
    prepare: async () => undefined,
    async publish(seq) {
      const res = await http('POST', `${base}/publish`, { body: changePayload(seq) });
      if (res.status !== 204) throw new Error(`publish: HTTP ${res.status} ${res.body}`);
    },
    async memory() {
      const res = await http('GET', `${base}/memory?gc=1`);
      const m = JSON.parse(res.body) as NodeJS.MemoryUsage;
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, afterGc: true };
    },
    alive: () => proc.running,
    output: () => proc.output(),
    stop: () => proc.stop(),
  };
}

/** The answer of a bench-owned server's `GET /memory`, with a full GC first when asked. */
export function memoryReport(url: string | undefined): string {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g && url?.includes('gc=1')) {
    g();
    g();
  }
  return JSON.stringify(process.memoryUsage());
}
