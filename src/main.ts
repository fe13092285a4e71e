import 'reflect-metadata';
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
  await startApp(config);
}

void main();
