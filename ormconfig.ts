/**
 * The DataSource for the TypeORM CLI (`npm run typeorm -- migration:generate …`).
 * Uses DATABASE_URL (PostgreSQL); migrations live in src/database/migrations.
 */
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { appEntities } from './src/database/database.options';

export default new DataSource({
  type: 'postgres',
  url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
  entities: appEntities('postgres'),
  migrations: ['src/database/migrations/*.ts'],
  synchronize: false,
});
