// Builds the optional native addons with node-gyp; runs as the `postinstall` of
// `npm install` / `npm ci`:
// - native/frame-writer, the product's: the fan-out works without it (one `fs.writeSync` per
//   socket instead of one native call per batch of sockets), so a machine without a C
//   compiler gets a warning here, not a failed install; `npm test` under REQUIRE_SERVICES=1
//   (CI) then fails, so that CI never passes without the path it ships;
// - native/frame-reader, the benchmark's load generator's (bench/lib/native-reader.ts):
//   without it the load generator reads frames in JavaScript, and the report says so.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addons = [
  {
    dir: join(root, 'native/frame-writer'),
    name: 'native frame writer',
    without: 'the fan-out falls back to one fs.writeSync per socket',
  },
  {
    dir: join(root, 'native/frame-reader'),
    name: "native frame reader (the bench's load generator)",
    without: 'the load generator reads frames in JavaScript',
  },
];

/** An addon left by an earlier build must not load in place of the one this build skipped. */
function removeOldBuild(addonDir) {
  rmSync(join(addonDir, 'build'), { recursive: true, force: true });
}

if (process.env.REALTIME_SKIP_NATIVE_BUILD === '1') {
  for (const addon of addons) {
    removeOldBuild(addon.dir);
    console.warn(`${addon.name}: not built (REALTIME_SKIP_NATIVE_BUILD=1)`);
  }
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
for (const addon of addons) {
  const started = Date.now();
  const result = spawnSync(command, [...prefix, ...args], {
    cwd: addon.dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (result.status === 0) {
    console.log(`${addon.name}: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } else {
    removeOldBuild(addon.dir);
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n').slice(-8);
    console.warn(
      [
        `${addon.name}: NOT built; ${addon.without}.`,
        result.error ? String(result.error) : output.join('\n'),
      ].join('\n'),
    );
  }
}
