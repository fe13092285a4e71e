import 'reflect-metadata';
import { lowerStartupThreads } from '@app/realtime';
import { ConfigError, loadConfig } from './config/app.config';
import { startApp } from './app.factory';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }
  // V8's compiler and GC helper threads yield the core to the event loop (Linux)
  lowerStartupThreads(config.backgroundThreadNice);
  await startApp(config);
}

void main();
