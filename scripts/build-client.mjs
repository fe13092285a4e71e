// Bundles the browser client (libs/client/src/index.ts) to one ESM file for the demo page
// and for apps that load it without a bundler. esbuild needs no type-check pass, so this
// takes milliseconds; `npm run typecheck` is where types are checked.
import { build } from 'esbuild';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { stdout } from 'node:process';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outfile = join(root, 'src/public/client/realtime-client.js');

mkdirSync(dirname(outfile), { recursive: true });

const started = performance.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: ['libs/client/src/index.ts'],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  sourcemap: true,
  // Source paths in the map are relative to the project, so the output is identical on
  // every machine and every run.
  sourceRoot: '',
  tsconfig: join(root, 'tsconfig.json'),
  // The client imports only types from the server library; the alias keeps a value import,
  // should one ever appear, from resolving to nothing.
  alias: { '@app/realtime': './libs/realtime/src', '@app/client': './libs/client/src' },
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
  metafile: true,
});

const bytes = Object.values(result.metafile.outputs).find((o) => o.entryPoint)?.bytes ?? 0;
stdout.write(
  `built ${outfile.slice(root.length + 1)} (${(bytes / 1024).toFixed(1)} KiB) in ${Math.round(performance.now() - started)} ms\n`,
);
