/**
 * Peer: nginx + Nchan (pub/sub as an nginx module), when this machine has it
 * (`apt-get install -y nginx-light libnginx-mod-nchan` on Debian). One worker process, so
 * that it competes with a single-threaded Node server on equal terms. Publishing is
 * `POST /pub` (Nchan's publisher endpoint) with the change as body; subscribers open a
 * WebSocket on `/sub`, whose channel is fixed (no auth and no subscribe message: Nchan
 * subscribes on connect).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { changePayload } from '../lib/common';
import { fdLimit, rssBytes } from '../lib/proc';
import { freePort, http, ManagedProcess, waitUntil } from '../lib/process';
import type { RunningTarget, SuiteContext, Target } from '../lib/target';

const NGINX = '/usr/sbin/nginx';
const MODULE_PATHS = [
  '/usr/lib/nginx/modules/ngx_nchan_module.so',
  '/usr/share/nginx/modules/ngx_nchan_module.so',
];

function nchanModule(): string | undefined {
  return MODULE_PATHS.find((p) => existsSync(p));
}

function config(dir: string, port: number, module: string): string {
  // The worker cannot raise its open-files limit above the hard limit it inherits.
  const hard = fdLimit().hard;
  const nofile = Number.isFinite(hard) ? Math.min(hard, 65536) : 65536;
  return `load_module ${module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile ${nofile};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${Math.max(1024, nofile - 100)}; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  nchan_shared_memory_size 256M;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /health { return 200 "ok"; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 64; }
    location = /sub { nchan_subscriber websocket; nchan_channel_id bench; }
  }
}
`;
}

export const nchanTarget: Target = {
  name: 'nchan',
  label: 'nginx + Nchan',

  async check(): Promise<string | null> {
    if (!existsSync(NGINX)) {
      return `${NGINX} not found (Debian: apt-get install -y nginx-light libnginx-mod-nchan)`;
    }
    const module = nchanModule();
    if (!module) return 'the nchan module is not installed (Debian: libnginx-mod-nchan)';
    const dir = mkdtempSync(join(tmpdir(), 'bench-nchan-check-'));
    try {
      writeFileSync(join(dir, 'nginx.conf'), config(dir, 1, module));
      execFileSync(
        NGINX,
        ['-t', '-q', '-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      return null;
    } catch (err) {
      const e = err as { stderr?: Buffer };
      return `nginx cannot load the nchan module: ${e.stderr?.toString().trim() ?? String(err)}`;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },

  async start(ctx: SuiteContext): Promise<RunningTarget> {
    const module = nchanModule() as string;
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'bench-nchan-'));
    mkdirSync(join(dir, 'body'));
    writeFileSync(join(dir, 'nginx.conf'), config(dir, port, module));
    const proc = ManagedProcess.start(
      'nchan',
      NGINX,
      ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')],
      { cwd: ctx.root },
    );
    const base = `http://127.0.0.1:${port}`;
    const up = await waitUntil(
      async () => (await http('GET', `${base}/health`)).status === 200,
      15_000,
      () => proc.running,
    );
    if (!up) {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start:\n${proc.output()}`);
    }
    return {
      pid: proc.pid,
      base,
      client: { kind: 'raw', url: `ws://127.0.0.1:${port}/sub` },
      notes: ['no authentication, no subscribe message (the URL names the channel)'],
      prepare: async () => undefined,
      async publish(seq) {
        const res = await http('POST', `${base}/pub`, { body: changePayload(seq) });
        if (res.status >= 300) throw new Error(`publish: HTTP ${res.status} ${res.body}`);
      },
      memory: async () => ({ rssBytes: rssBytes(proc.pid), heapUsedBytes: null, afterGc: false }),
      alive: () => proc.running,
      output: () => proc.output(),
      async stop() {
        await proc.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};
