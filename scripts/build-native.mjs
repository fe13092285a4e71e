// Builds the optional native frame writer (native/frame-writer) with node-gyp; runs as the
// `postinstall` of `npm install` / `npm ci`. The fan-out works without it (one
// `fs.writeSync` per socket instead of one native call per batch of sockets), so a machine
// without a C compiler gets a warning here, not a failed install; `npm test` under
// REQUIRE_SERVICES=1 (CI) then fails, so that CI never passes without the path it ships.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = join(root, 'native/frame-writer');

/** An addon left by an earlier build must not load in place of the one this build skipped. */
function removeOldBuild() {
  rmSync(join(addonDir, 'build'), { recursive: true, force: true });
}

if (process.env.REALTIME_SKIP_NATIVE_BUILD === '1') {
  removeOldBuild();
  console.warn('native frame writer: not built (REALTIME_SKIP_NATIVE_BUILD=1)');
  process.exit(0);
}

/** node-gyp: the one npm runs scripts with, else npm's own copy, else one on the PATH. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) {
    return [process.execPath, process.env.npm_config_node_gyp];
  }
  const npmBundled = resolve(
    dirname(process.execPath),
    '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  );
  if (existsSync(npmBundled)) return [process.execPath, npmBundled];
  try {
    return [process.execPath, createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js')];
  } catch {
    return ['node-gyp'];
  }
}

const args = ['rebuild', '--release'];
// Without a nodedir node-gyp downloads Node's headers; use the installed ones when there are.
const headers = resolve(dirname(process.execPath), '../include/node');
if (!process.env.npm_config_nodedir && existsSync(join(headers, 'node_api.h'))) {
  args.push(`--nodedir=${resolve(headers, '../..')}`);
}

const [command, ...prefix] = nodeGyp();
const started = Date.now();
const result = spawnSync(command, [...prefix, ...args], {
  cwd: addonDir,
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'pipe'],
});
if (result.status === 0) {
  console.log(`native frame writer: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} else {
  removeOldBuild();
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n').slice(-8);
  console.warn(
    [
      'native frame writer: NOT built; the fan-out falls back to one fs.writeSync per socket.',
      result.error ? String(result.error) : output.join('\n'),
    ].join('\n'),
  );
}
