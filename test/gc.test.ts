import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EntityName, MikroORM as CoreORM } from '@mikro-orm/core';
import { MikroORM } from '@mikro-orm/sqlite';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  AbsoluteTimeout,
  collectGarbage,
  ConfigurableAbsoluteTimeout,
  ConfigurableIdleTimeout,
  ConfigurationError,
  countExpiredSessions,
  defineSessionEntity,
  IdleTimeout,
  session,
  type GarbageCollectionOptions,
  type GarbageCollectionProgress,
} from '../src/index.js';
import { databases } from './support/databases.js';
import { FakeClock, harness, Item, type Harness, type Route } from './support/app.js';

/**
 * Garbage collection of expired sessions, on every database: exactly the rows
 * the middleware would find expired go, in bounded batches.  Time moves only
 * through the clock option.
 */
const Tuned = defineSessionEntity({
  name: 'GcTunedSession',
  tableName: 'gc_tuned_session',
  features: [ConfigurableIdleTimeout, ConfigurableAbsoluteTimeout],
});
const Fixed = defineSessionEntity({
  name: 'GcFixedSession',
  tableName: 'gc_fixed_session',
  features: [IdleTimeout, AbsoluteTimeout],
});
const Bare = defineSessionEntity({ name: 'GcBareSession', tableName: 'gc_bare_session' });
const ENTITIES = [Tuned, Fixed, Bare, Item];

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();
const idOf = (label: string) => createHash('sha256').update(label).digest('hex');

interface Case {
  label: string;
  idle?: Record<string, number | null>;
  absolute?: Record<string, number | null>;
  /** Whether collectGarbage deletes the row. */
  expired: boolean;
}

for (const db of databases) {
  describe.skipIf(db.skip)(`collectGarbage on ${db.name}`, () => {
    let orm: CoreORM | undefined;
    let h: Harness | undefined;
    /** Every statement of `orm`. */
    let sql: string[] = [];
    let clock = new FakeClock();

    afterEach(async () => {
      await orm?.close(true);
      orm = undefined;
      await h?.close();
      h = undefined;
    });

    async function start(): Promise<CoreORM> {
      sql = [];
      clock = new FakeClock();
      orm = await db.init(ENTITIES, sql);
      return orm;
    }

    /** Now, in seconds since the epoch, as the collector and the middleware see it. */
    const now = () => Math.floor(clock.ms / 1000);

    async function insert(entity: EntityName<any>, cases: Omit<Case, 'expired'>[]): Promise<void> {
      const em = orm!.em.fork();
      const embeds = (name: string) => orm!.getMetadata(entity).properties[name]?.kind === 'embedded';
      for (const { label, idle = {}, absolute = {} } of cases) {
        em.create(entity, {
          id: idOf(label),
          created: now() - 100_000,
          version: 1,
          data: { label },
          flash: {},
          ...(embeds('idle') && { idle }),
          ...(embeds('absolute') && { absolute }),
        });
      }
      await em.flush();
      sql.splice(0);
    }

    async function remaining(entity: EntityName<any>): Promise<string[]> {
      const rows = await orm!.em.fork().find(entity, {}, { fields: ['data'] as any });
      return rows.map((row: any) => row.data.label).sort();
    }

    /** Inserts the cases, collects, and checks that exactly the expired ones went. */
    async function expectCollected(entity: EntityName<any>, cases: Case[], options: Partial<GarbageCollectionOptions>) {
      await insert(entity, cases);
      const expired = cases
        .filter((c) => c.expired)
        .map((c) => c.label)
        .sort();
      const base = { orm: orm!, entity, clock: clock.now, ...options };
      expect(
        await countExpiredSessions({
          orm: base.orm,
          entity,
          clock: clock.now,
          idleTimeout: options.idleTimeout,
          absoluteTimeout: options.absoluteTimeout,
        }),
      ).toBe(expired.length);
      const result = await collectGarbage(base);
      expect(result.deleted).toBe(expired.length);
      expect(await remaining(entity)).toEqual(
        cases
          .filter((c) => !c.expired)
          .map((c) => c.label)
          .sort(),
      );
      return result;
    }

    describe('what is deleted', () => {
      test('global idle timeout on, absolute off: idle expiries at or before now, per-session absolute timeouts', async () => {
        await start();
        const T = now();
        await expectCollected(
          Tuned,
          [
            { label: 'idle expired', idle: { idleExpire: T - 1 }, expired: true },
            { label: 'idle expires this second', idle: { idleExpire: T }, expired: true },
            { label: 'idle alive', idle: { idleExpire: T + 1 }, expired: false },
            { label: 'idle never scheduled', idle: { idleExpire: null }, expired: false },
            {
              label: 'own shorter idle timeout, expired',
              idle: { idleExpire: T - 30, idleTimeout: 60 },
              expired: true,
            },
            { label: 'own shorter idle timeout, alive', idle: { idleExpire: T + 30, idleTimeout: 60 }, expired: false },
            {
              label: 'absolute expired, absolute off',
              idle: { idleExpire: T + 60 },
              absolute: { absoluteExpire: T - 1 },
              expired: false,
            },
            {
              label: 'own absolute timeout, expired',
              idle: { idleExpire: T + 60 },
              absolute: { absoluteExpire: T - 1, absoluteTimeout: 3600 },
              expired: true,
            },
            {
              label: 'own absolute timeout, alive',
              idle: { idleExpire: T + 60 },
              absolute: { absoluteExpire: T + 1, absoluteTimeout: 3600 },
              expired: false,
            },
            {
              label: 'own absolute timeout, no expiry',
              idle: { idleExpire: T + 60 },
              absolute: { absoluteExpire: null, absoluteTimeout: 3600 },
              expired: false,
            },
          ],
          { idleTimeout: 600 },
        );
      });

      test('no global timeout: only rows whose own timeout is set', async () => {
        await start();
        const T = now();
        await expectCollected(
          Tuned,
          [
            { label: 'own idle timeout, expired', idle: { idleExpire: T - 1, idleTimeout: 60 }, expired: true },
            { label: 'own idle timeout, alive', idle: { idleExpire: T + 1, idleTimeout: 60 }, expired: false },
            { label: 'idle expiry passed, timeout off', idle: { idleExpire: T - 1000 }, expired: false },
            {
              label: 'own absolute timeout, expired',
              absolute: { absoluteExpire: T, absoluteTimeout: 60 },
              expired: true,
            },
            { label: 'absolute expiry passed, timeout off', absolute: { absoluteExpire: T - 1000 }, expired: false },
            { label: 'both off', expired: false },
          ],
          {},
        );
      });

      test('plain features: the global settings alone decide', async () => {
        await start();
        const T = now();
        const result = await expectCollected(
          Fixed,
          [
            {
              label: 'absolute expired',
              idle: { idleExpire: T + 100 },
              absolute: { absoluteExpire: T - 1 },
              expired: true,
            },
            { label: 'absolute expires this second', absolute: { absoluteExpire: T }, expired: true },
            { label: 'absolute alive', absolute: { absoluteExpire: T + 1 }, expired: false },
            {
              label: 'idle expired, idle off',
              idle: { idleExpire: T - 1 },
              absolute: { absoluteExpire: T + 1 },
              expired: false,
            },
          ],
          { absoluteTimeout: 3600 },
        );
        expect(result).toEqual({ deleted: 2, batches: 1 });
        // Idle on as well: the idle-expired row goes too.
        expect(
          await collectGarbage({ orm: orm!, entity: Fixed, clock: clock.now, idleTimeout: 60, absoluteTimeout: 3600 }),
        ).toEqual({ deleted: 1, batches: 1 });
        expect(await remaining(Fixed)).toEqual(['absolute alive']);
      });

      test('no timeout on at all: nothing is deleted, and no statement is sent', async () => {
        await start();
        const T = now();
        await insert(Fixed, [
          { label: 'stale', idle: { idleExpire: T - 1000 }, absolute: { absoluteExpire: T - 1000 } },
        ]);
        await insert(Bare, [{ label: 'bare' }]);
        for (const entity of [Fixed, Bare]) {
          expect(await collectGarbage({ orm: orm!, entity, clock: clock.now })).toEqual({ deleted: 0, batches: 0 });
          expect(await countExpiredSessions({ orm: orm!, entity, clock: clock.now })).toBe(0);
        }
        expect(sql).toEqual([]);
        expect(await remaining(Fixed)).toEqual(['stale']);
      });

      test('time moves through the clock option', async () => {
        await start();
        const T = now();
        await insert(Fixed, [
          { label: 'a', idle: { idleExpire: T + 10 } },
          { label: 'b', idle: { idleExpire: T + 20 } },
        ]);
        const collect = () => collectGarbage({ orm: orm!, entity: Fixed, idleTimeout: 60, clock: clock.now });
        expect(await collect()).toEqual({ deleted: 0, batches: 0 });
        clock.advance(10);
        expect(await collect()).toEqual({ deleted: 1, batches: 1 });
        // Milliseconds do not count until the second is over, as in the middleware.
        clock.advance(9.999);
        expect(await collect()).toEqual({ deleted: 0, batches: 0 });
        clock.advance(0.001);
        expect(await collect()).toEqual({ deleted: 1, batches: 1 });
        expect(await remaining(Fixed)).toEqual([]);
      });
    });

    describe('batches', () => {
      async function fill(expired: number, alive: number): Promise<void> {
        const T = now();
        await insert(Fixed, [
          ...Array.from({ length: expired }, (_, i) => ({ label: `expired ${i}`, idle: { idleExpire: T - 1 - i } })),
          ...Array.from({ length: alive }, (_, i) => ({ label: `alive ${i}`, idle: { idleExpire: T + 1 + i } })),
        ]);
      }

      /** Collects with `batchSize`, recording the statements of each batch. */
      async function collectInBatches(batchSize: number) {
        const progress: GarbageCollectionProgress[] = [];
        const perBatch: string[][] = [];
        let mark = sql.length;
        const result = await collectGarbage({
          orm: orm!,
          entity: Fixed,
          idleTimeout: 60,
          clock: clock.now,
          batchSize,
          onBatch(p) {
            progress.push(p);
            perBatch.push(sql.slice(mark));
            mark = sql.length;
          },
        });
        return { result, progress, perBatch, tail: sql.slice(mark) };
      }

      test('25 expired rows in batches of 10: 3 batches, each of a bounded number of statements', async () => {
        await start();
        await fill(25, 5);
        const { result, progress, perBatch, tail } = await collectInBatches(10);
        expect(result).toEqual({ deleted: 25, batches: 3 });
        expect(progress).toEqual([
          { deleted: 10, batches: 1, batchDeleted: 10 },
          { deleted: 20, batches: 2, batchDeleted: 10 },
          { deleted: 25, batches: 3, batchDeleted: 5 },
        ]);
        // The short third batch was the last: no statement after it.
        expect(tail).toEqual([]);
        for (const statements of perBatch) {
          if (db.name === 'postgresql') {
            // One statement: the DELETE of at most 10 ids its sub-select locks, skipping rows another instance holds.
            expect(statements).toHaveLength(1);
            expect(statements[0]).toMatch(
              /^delete from "gc_fixed_session" where "id" in \(select .* limit \? for update skip locked\)$/,
            );
          } else {
            // SELECT of at most 10 ids, then their DELETE (which repeats the expiry condition).
            expect(statements.map(verb)).toEqual(['select', 'delete']);
            expect(statements[0]).toMatch(/ limit \?$/);
            expect(statements[1].match(/\?/g)!.length).toBeLessThanOrEqual(10 + 2);
            expect(statements[1]).toMatch(/idle_expire/);
          }
        }
        expect(await remaining(Fixed)).toEqual(['alive 0', 'alive 1', 'alive 2', 'alive 3', 'alive 4']);
      });

      test('a full last batch: one more statement finds nothing', async () => {
        await start();
        await fill(20, 1);
        const { result, perBatch, tail } = await collectInBatches(10);
        expect(result).toEqual({ deleted: 20, batches: 2 });
        expect(perBatch.map((statements) => statements.length)).toEqual(db.name === 'postgresql' ? [1, 1] : [2, 2]);
        expect(tail.map(verb)).toEqual([db.name === 'postgresql' ? 'delete' : 'select']);
      });

      test('the default batch size is 1000', async () => {
        await start();
        await fill(1001, 0);
        expect(await collectGarbage({ orm: orm!, entity: Fixed, idleTimeout: 60, clock: clock.now })).toEqual({
          deleted: 1001,
          batches: 2,
        });
      });

      test('two collectors at once delete every expired row once between them', async () => {
        await start();
        await fill(200, 3);
        const options = { orm: orm!, entity: Fixed, idleTimeout: 60, clock: clock.now, batchSize: 7 };
        const [a, b] = await Promise.all([collectGarbage(options), collectGarbage(options)]);
        expect(a.deleted + b.deleted).toBe(200);
        expect(await remaining(Fixed)).toEqual(['alive 0', 'alive 1', 'alive 2']);
      });

      test('an abort signal stops between batches', async () => {
        await start();
        await fill(30, 0);
        const controller = new AbortController();
        const run = collectGarbage({
          orm: orm!,
          entity: Fixed,
          idleTimeout: 60,
          clock: clock.now,
          batchSize: 10,
          signal: controller.signal,
          onBatch: () => controller.abort(),
        });
        await expect(run).rejects.toMatchObject({ name: 'AbortError' });
        expect(await remaining(Fixed)).toHaveLength(20);
        // An aborted signal deletes nothing.
        await expect(
          collectGarbage({ orm: orm!, entity: Fixed, idleTimeout: 60, clock: clock.now, signal: AbortSignal.abort() }),
        ).rejects.toMatchObject({ name: 'AbortError' });
        expect(await remaining(Fixed)).toHaveLength(20);
      });
    });

    test('agrees with the middleware: what it keeps is valid, and it removes sessions with a shorter own idle timeout', async () => {
      const routes: Record<string, Route> = {
        'POST /login': (ctx, body) => {
          ctx.session.set('k', body.name);
          if (body.settings) ctx.session.settings.withEdit((s) => Object.assign(s, body.settings));
          return { id: ctx.session.id };
        },
        'GET /peek': (ctx) => ({ value: ctx.session.get('k') ?? null, isNew: ctx.session.isNew }),
      };
      const settings = { idleTimeout: 600, absoluteTimeout: 3600 };
      const app = (h = await harness(db, { entity: Tuned, options: settings, routes }));
      const collect = () => collectGarbage({ orm: app.orm, entity: Tuned, clock: app.clock.now, ...settings });
      const login = async (name: string, own?: object) => {
        const client = app.client();
        const { id } = (await client.post('/login', { name, settings: own })).json;
        return { client, id: id as string };
      };
      const plain = await login('plain');
      const shortIdle = await login('short idle', { idleTimeout: 60 });
      const shortAbsolute = await login('short absolute', { absoluteTimeout: 300 });

      app.clock.advance(120);
      expect(await collect()).toEqual({ deleted: 1, batches: 1 });
      expect((await shortIdle.client.get('/peek')).json).toEqual({ value: null, isNew: true });
      expect(app.events).toContainEqual({ name: 'session:invalid-cookie', reason: 'unknown-session' });
      // The others are still valid for the middleware (their reads extend the idle expiry to 720).
      expect((await plain.client.get('/peek')).json.value).toBe('plain');
      expect((await shortAbsolute.client.get('/peek')).json.value).toBe('short absolute');

      app.clock.advance(200);
      expect(await collect()).toEqual({ deleted: 1, batches: 1 });
      expect((await shortAbsolute.client.get('/peek')).json.value).toBeNull();
      expect((await plain.client.get('/peek')).json.value).toBe('plain');

      // The last read, at 320 s, moved the idle expiry to 920 s.
      app.clock.advance(599);
      expect(await collect()).toEqual({ deleted: 0, batches: 0 });
      app.clock.advance(1);
      expect(await collect()).toEqual({ deleted: 1, batches: 1 });
      expect((await plain.client.get('/peek')).json).toEqual({ value: null, isNew: true });
    });
  });
}

describe('collectGarbage options', () => {
  const sqlite = databases.find((db) => db.name === 'sqlite')!;
  let orm: CoreORM | undefined;
  afterEach(async () => {
    await orm?.close(true);
    orm = undefined;
  });

  const attempt = (options: Record<string, unknown>) => async () => {
    orm ??= await sqlite.init(ENTITIES);
    return collectGarbage({ orm, entity: Fixed, idleTimeout: 60, ...options } as GarbageCollectionOptions);
  };

  test.each([
    ['batchSize 0', { batchSize: 0 }, /batchSize must be a whole number from 1 to 10000 \(got 0\)/],
    ['batchSize 1.5', { batchSize: 1.5 }, /batchSize must be a whole number from 1 to 10000 \(got 1.5\)/],
    ['batchSize 10001', { batchSize: 10_001 }, /batchSize must be a whole number from 1 to 10000/],
    ['idleTimeout 0', { idleTimeout: 0 }, /idleTimeout must be at least 1 second \(got 0\)/],
    ['absoluteTimeout 1.5', { absoluteTimeout: 1.5 }, /absoluteTimeout must be a whole number of seconds/],
    [
      'idleTimeout without the feature',
      { entity: Bare },
      /option idleTimeout needs the IdleTimeout feature: entity GcBareSession embeds no IdleTimeout \(or ConfigurableIdleTimeout\)/,
    ],
    [
      'absoluteTimeout without the feature',
      { entity: Bare, idleTimeout: null, absoluteTimeout: 60 },
      /option absoluteTimeout needs the AbsoluteTimeout feature/,
    ],
    ['an unknown option', { idleTimout: 60 }, /collectGarbage: unknown option idleTimout/],
    ['an orm that is not one', { orm: {} }, /option orm must be an initialised MikroORM instance/],
    [
      'an entity the ORM does not know',
      { entity: defineSessionEntity({ name: 'Stranger', tableName: 'stranger' }) },
      /entity Stranger is not known to this MikroORM instance/,
    ],
    ['an entity that is not a session entity', { entity: Item }, /entity Item is not a session entity/],
    ['a clock that is not a function', { clock: 5 }, /option clock must be a function/],
    ['a signal that is not an AbortSignal', { signal: {} }, /option signal must be an AbortSignal/],
    ['onBatch that is not a function', { onBatch: 1 }, /option onBatch must be a function/],
  ])('%s', async (_, options, message) => {
    const call = attempt(options);
    await expect(call()).rejects.toThrow(ConfigurationError);
    await expect(call()).rejects.toThrow(message);
  });

  test('options must be an object', async () => {
    await expect(collectGarbage(undefined as any)).rejects.toThrow(
      /collectGarbage\(options\): options must be an object/,
    );
  });
});

// --- The command line -----------------------------------------------------------------------

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'koa-mikro-session.js');

/** The same table as the temporary configs' entity, for seeding and reading its SQLite file. */
const CliSession = defineSessionEntity({
  name: 'CliSession',
  tableName: 'cli_session',
  features: [IdleTimeout, AbsoluteTimeout],
});
const OtherSession = defineSessionEntity({ name: 'OtherSession', tableName: 'other_session', features: [IdleTimeout] });

/** The entities of the configs, in TypeScript: Node strips the types itself. */
const ENTITIES_TS = `
import { AbsoluteTimeout, defineSessionEntity, IdleTimeout } from 'koa-mikro-session';

const features: unknown[] = [IdleTimeout, AbsoluteTimeout];
export const CliSession = defineSessionEntity({ name: 'CliSession', tableName: 'cli_session', features });
export const OtherSession = defineSessionEntity({ name: 'OtherSession', tableName: 'other_session', features: [IdleTimeout] });
`;

/** A user's mikro-orm.config.ts: its relative import carries the real extension. */
const CONFIG_TS = `
import { defineConfig } from '@mikro-orm/sqlite';
import { CliSession } from './entities.ts';

const dbName: string = process.env.SESSIONS_DB ?? 'sessions.sqlite';
export default defineConfig({ dbName, entities: [CliSession] });
`;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The shell of a user: none of the npm_* or vitest variables of this run, and no forced colours. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(npm_|vitest|FORCE_COLOR$|NO_COLOR$|MIKRO_ORM_)/i.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

function cli(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: userEnv(env), timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/** An error report: one line, no stack trace. */
function expectOneLineError(run: Run, message: RegExp): void {
  expect(run.code, run.stderr).not.toBe(0);
  expect(run.stdout).toBe('');
  const lines = run.stderr.trimEnd().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^koa-mikro-session: /);
  expect(lines[0]).toMatch(message);
  expect(run.stderr).not.toMatch(/^\s+at /m);
}

describe('the koa-mikro-session command', () => {
  const sqlite = databases.find((db) => db.name === 'sqlite')!;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist', 'cli.js')))
      throw new Error('dist/cli.js is missing: run `npm run build` first (npm test does)');
    // Under the package, so that the configs import 'koa-mikro-session' by name, as a user's do (temp/ is git-ignored).
    await mkdir(join(ROOT, 'temp'), { recursive: true });
    dir = await mkdtemp(join(ROOT, 'temp', 'gc-cli-'));
    await writeFile(join(dir, 'entities.ts'), ENTITIES_TS);
    await writeFile(join(dir, 'mikro-orm.config.ts'), CONFIG_TS);
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    await rmdir(join(ROOT, 'temp')).catch(() => undefined); // only when nothing else is in it
  });

  /** A fresh SQLite file holding `rows` (seconds relative to now); returns its path. */
  async function seed(
    name: string,
    rows: { label: string; idle?: number | null; absolute?: number | null }[],
    entities: EntityName<any>[] = [CliSession],
  ) {
    const file = join(dir, `${name}.sqlite`);
    await rm(file, { force: true });
    const orm = await MikroORM.init({ dbName: file, entities });
    try {
      await orm.schema.create();
      const em = orm.em.fork();
      const now = Math.floor(Date.now() / 1000);
      const at = (offset: number | null | undefined) => (offset === null || offset === undefined ? null : now + offset);
      for (const { label, idle, absolute } of rows) {
        em.create(CliSession, {
          id: idOf(label),
          created: now - 100_000,
          version: 1,
          data: { label },
          flash: {},
          idle: { idleExpire: at(idle) },
          absolute: { absoluteExpire: at(absolute) },
        });
      }
      await em.flush();
    } finally {
      await orm.close(true);
    }
    return file;
  }

  async function labels(file: string): Promise<string[]> {
    const orm = await MikroORM.init({ dbName: file, entities: [CliSession] });
    try {
      return (await orm.em.fork().find(CliSession, {})).map((row: any) => row.data.label).sort();
    } finally {
      await orm.close(true);
    }
  }

  test('keygen prints a new 32-byte base64url key that session() accepts', async () => {
    const first = await cli(['keygen'], dir);
    const second = await cli(['keygen'], dir);
    expect(first).toMatchObject({ code: 0, stderr: '' });
    expect(first.stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    const key = first.stdout.trim();
    const bytes = Buffer.from(key, 'base64url');
    expect(bytes).toHaveLength(32);
    expect(bytes.toString('base64url')).toBe(key);
    expect(second.stdout).not.toBe(first.stdout);
    const orm = await sqlite.init([CliSession]);
    try {
      expect(() => session({ orm, entity: CliSession, secret: key })).not.toThrow();
    } finally {
      await orm.close(true);
    }
  });

  test('gc finds mikro-orm.config.ts in the current directory, deletes the expired rows and prints a summary, without ANSI codes', async () => {
    const db = await seed('default', [
      { label: 'idle expired', idle: -10 },
      { label: 'idle expired long ago', idle: -100_000, absolute: 3600 },
      { label: 'idle expired too', idle: -1 },
      { label: 'alive', idle: 3600 },
      { label: 'alive too', idle: 60, absolute: 3600 },
      { label: 'absolute expired, absolute off', idle: 3600, absolute: -10 },
    ]);
    const run = await cli(['gc', '--idle-timeout', '1800'], dir, { SESSIONS_DB: db });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('deleted 3 expired sessions in 1 batch\n');
    expect(run.stderr.split('\n')).toEqual([
      '3 expired sessions in CliSession (table cli_session; idle timeout 1800 s)',
      'deleted 3/3 (1 batch)',
      '',
    ]);
    expect(run.stdout + run.stderr).not.toMatch(/\x1b/);
    expect(await labels(db)).toEqual(['absolute expired, absolute off', 'alive', 'alive too']);
  });

  test('gc --config, --batch-size and --absolute-timeout: plain progress lines when not on a terminal', async () => {
    await writeFile(
      join(dir, 'other.config.mjs'),
      `
      import { defineConfig } from '@mikro-orm/sqlite';
      import { defineSessionEntity, IdleTimeout, AbsoluteTimeout } from 'koa-mikro-session';
      export default defineConfig({
        dbName: process.env.SESSIONS_DB,
        entities: [defineSessionEntity({ name: 'CliSession', tableName: 'cli_session', features: [IdleTimeout, AbsoluteTimeout] })],
      });
    `,
    );
    const db = await seed('batches', [
      ...Array.from({ length: 5 }, (_, i) => ({ label: `absolute expired ${i}`, idle: 3600, absolute: -i })),
      { label: 'idle expired, idle off', idle: -10, absolute: 10 },
    ]);
    const run = await cli(
      ['gc', '--config', 'other.config.mjs', '--batch-size', '2', '--absolute-timeout', '3600'],
      dir,
      { SESSIONS_DB: db },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('deleted 5 expired sessions in 3 batches\n');
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe('5 expired sessions in CliSession (table cli_session; absolute timeout 3600 s)');
    // At most one line a second, and always the last.
    expect(lines[1]).toBe('deleted 2/5 (1 batch)');
    expect(lines.at(-1)).toBe('deleted 5/5 (3 batches)');
    expect(run.stdout + run.stderr).not.toMatch(/\x1b/);
    expect(await labels(db)).toEqual(['idle expired, idle off']);
  });

  test('on a terminal, gc draws a progress bar', async (context) => {
    const script = ['/usr/bin/script', '/bin/script'].find((path) => existsSync(path));
    if (!script) return context.skip('no `script` command (util-linux) to give the command a terminal');
    const db = await seed(
      'tty',
      Array.from({ length: 4 }, (_, i) => ({ label: `expired ${i}`, idle: -1 - i })),
    );
    const quote = (arg: string) => `'${arg.replace(/'/g, `'\\''`)}'`;
    const command = [process.execPath, BIN, 'gc', '--idle-timeout', '60', '--batch-size', '3'].map(quote).join(' ');
    const run = await new Promise<Run>((resolve) => {
      execFile(
        script,
        ['-qefc', command, '/dev/null'],
        { cwd: dir, env: userEnv({ SESSIONS_DB: db, COLUMNS: '120', TERM: 'xterm' }), timeout: 60_000 },
        (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr }),
      );
    });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/deleting \[[\u2588\u2591]+\] 100% \| 4\/4 sessions \| 2 batches/);
    expect(run.stdout).toMatch(/\x1b\[/);
    expect(run.stdout).toMatch(/deleted 4 expired sessions in 2 batches/);
    expect(await labels(db)).toEqual([]);
  });

  test('a missing config file: a non-zero exit and a one-line message', async () => {
    expectOneLineError(
      await cli(['gc', '--config', 'missing.config.ts', '--idle-timeout', '60'], dir),
      /config file not found: .*missing\.config\.ts$/,
    );
  });

  test('no config in the current directory: the paths searched, and how to give one', async () => {
    const empty = await mkdtemp(join(dir, 'empty-'));
    expectOneLineError(
      await cli(['gc', '--idle-timeout', '60'], empty),
      /no MikroORM config found in .*mikro-orm\.config\.ts.*mikro-orm\.config\.js.*pass --config <path>/,
    );
  });

  test('a .ts config whose relative import lacks its real extension: the reason and the fix', async () => {
    await writeFile(join(dir, 'js-extension.config.ts'), CONFIG_TS.replace("'./entities.ts'", "'./entities.js'"));
    expectOneLineError(
      await cli(['gc', '--config', 'js-extension.config.ts', '--idle-timeout', '60'], dir),
      /cannot load the MikroORM config .*entities\.js.*need their real extension/,
    );
  });

  test('an unreachable database', async () => {
    await writeFile(
      join(dir, 'unreachable.config.mjs'),
      `
      import { defineConfig } from '@mikro-orm/postgresql';
      import { defineSessionEntity, IdleTimeout } from 'koa-mikro-session';
      export default defineConfig({ clientUrl: 'postgresql://nobody@127.0.0.1:9/none', entities: [defineSessionEntity({ features: [IdleTimeout] })] });
    `,
    );
    expectOneLineError(
      await cli(['gc', '--config', 'unreachable.config.mjs', '--idle-timeout', '60'], dir),
      /cannot connect to the database of .*unreachable\.config\.mjs: .*(ECONNREFUSED|connect)/i,
    );
  });

  test('an unknown entity, an entity that is not a session entity, and no timeout', async () => {
    await writeFile(
      join(dir, 'app.config.mjs'),
      `
      import { defineConfig } from '@mikro-orm/sqlite';
      import { defineEntity, p } from '@mikro-orm/core';
      import { CliSession } from './entities.ts';
      const Item = defineEntity({ name: 'Item', properties: { id: p.integer().primary() } });
      export default defineConfig({ dbName: process.env.SESSIONS_DB, entities: [Item, CliSession] });
    `,
    );
    const db = await seed('entities', [{ label: 'expired', idle: -5 }]);
    const env = { SESSIONS_DB: db };
    const gc = (...args: string[]) => cli(['gc', '--config', 'app.config.mjs', ...args], dir, env);
    expectOneLineError(
      await gc('--entity', 'Nope', '--idle-timeout', '60'),
      /unknown entity Nope: the config's session entities are CliSession$/,
    );
    expectOneLineError(
      await gc('--entity', 'Item', '--idle-timeout', '60'),
      /entity Item is not a session entity: created must be a scalar column/,
    );
    expectOneLineError(
      await gc(),
      /no timeout is on for CliSession: pass the app's --idle-timeout and\/or --absolute-timeout/,
    );
    expect(await labels(db)).toEqual(['expired']);
    // The app's other entities do not stand in the way of finding the session entity.
    expect((await gc('--idle-timeout', '60')).stdout).toBe('deleted 1 expired session in 1 batch\n');
  });

  test('several session entities: --entity picks one (by class or table name)', async () => {
    await writeFile(
      join(dir, 'two.config.ts'),
      CONFIG_TS.replace('import { CliSession }', 'import { CliSession, OtherSession }').replace(
        'entities: [CliSession]',
        'entities: [CliSession, OtherSession]',
      ),
    );
    const db = await seed('two', [{ label: 'expired', idle: -5 }], [CliSession, OtherSession]);
    const env = { SESSIONS_DB: db };
    expectOneLineError(
      await cli(['gc', '--config', 'two.config.ts', '--idle-timeout', '60'], dir, env),
      /several session entities \(CliSession, OtherSession\): pick one with --entity <name>/,
    );
    const run = await cli(
      ['gc', '--config', 'two.config.ts', '--entity', 'cli_session', '--idle-timeout', '60'],
      dir,
      env,
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('deleted 1 expired session in 1 batch\n');
  });

  test.each([
    [
      ['gc', '--batch-size', 'many'],
      /option '--batch-size <rows>' argument 'many' is invalid. expected a whole number\./,
    ],
    [
      ['gc', '--batch-size', '0'],
      /option '--batch-size <rows>' argument '0' is invalid. expected a whole number from 1 to 10000\./,
    ],
    [['gc', '--idle-timeout', '-5'], /option '--idle-timeout <seconds>' argument '-5' is invalid/],
    [
      ['gc', '--idle-timeout', '0'],
      /option '--idle-timeout <seconds>' argument '0' is invalid. expected a whole number of seconds from 1 to 100000000/,
    ],
    [['gc', '--absolute-timeout', '1e9'], /option '--absolute-timeout <seconds>' argument '1e9' is invalid/],
    [['gc', '--idle-timout', '60'], /unknown option '--idle-timout'/],
    [['collect'], /unknown command 'collect'/],
  ])('a bad command line (%j): commander says why, exit code 1, nothing runs', async (args, message) => {
    const run = await cli(args, dir);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(message);
  });
});
