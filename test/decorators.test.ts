import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { EntityClass } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SessionBase } from '../src/index.js';
import { harness, Item, type Harness, type Route } from './support/app.js';
import { databases } from './support/databases.js';

/**
 * Decorator-defined session entities: the two code blocks of the README's "With decorators"
 * section, read from the README itself, compiled by the project's TypeScript as an app would
 * compile them, and driven over HTTP on every database. The ORM is given the session class and
 * the app's Item only: neither SessionBase nor the feature embeddables are listed.
 *
 * Why tsc and not vitest's own transform: vitest 4 transforms TypeScript with oxc, which compiles
 * legacy decorators when the nearest tsconfig.json sets experimentalDecorators, but leaves ES
 * decorators untouched, and Node 24 can't parse them. tsc compiles both, and type-checks the
 * README's code on the way (noEmitOnError: a type error fails the test).
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');

type Flavour = 'es' | 'legacy';
const FLAVOURS: { flavour: Flavour; title: string; compilerOptions: Record<string, unknown>; skip?: string }[] = [
  { flavour: 'es', title: 'ES decorators', compilerOptions: {} },
  {
    flavour: 'legacy',
    title: 'legacy decorators',
    compilerOptions: { experimentalDecorators: true },
    skip: missingReflectMetadata(),
  },
];

/**
 * @mikro-orm/decorators/legacy (7.2.1) imports reflect-metadata when it loads, though its
 * package.json calls that peer optional: without it the legacy recipe can't even be imported.
 */
function missingReflectMetadata(): string | undefined {
  try {
    createRequire(require.resolve('@mikro-orm/decorators/package.json')).resolve('reflect-metadata');
    return undefined;
  } catch {
    const reason = 'reflect-metadata is not installed, and @mikro-orm/decorators/legacy imports it';
    if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: every recipe must run)`);
    console.warn(`[koa-mikro-session tests] skipping the legacy decorator recipe: ${reason}`);
    return reason;
  }
}

/** The ```ts blocks of the README's "With decorators" section, by the decorators they import. */
function recipes(): Record<Flavour, string> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('\n### With decorators\n');
  if (start === -1) throw new Error('README.md has no "### With decorators" section');
  const next = readme.slice(start + 1).search(/\n##+ /);
  const section = readme.slice(start, next === -1 ? undefined : start + 1 + next);
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]);
  const found = (flavour: Flavour) =>
    blocks.filter((block) => block.includes(`from '@mikro-orm/decorators/${flavour}'`));
  if (blocks.length !== 2 || found('es').length !== 1 || found('legacy').length !== 1) {
    throw new Error('the "With decorators" section should have two ts blocks, one per decorator flavour');
  }
  return { es: found('es')[0], legacy: found('legacy')[0] };
}

// Inside the repository (temp/ is git-ignored), so the compiled code resolves the packages of
// node_modules/ as the project does.
mkdirSync(join(root, 'temp'), { recursive: true });
const work = mkdtempSync(join(root, 'temp', 'decorators-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Compiles a recipe with tsc into `work`; returns its AppSession class. */
async function compile(
  flavour: Flavour,
  source: string,
  compilerOptions: Record<string, unknown>,
): Promise<EntityClass<any>> {
  const dir = join(work, flavour);
  const outDir = join(work, 'out');
  mkdirSync(dir);
  writeFileSync(join(dir, 'session.ts'), source);
  const tsconfig = {
    // The repository's settings (strict, nodenext, es2023), its path of 'koa-mikro-session' to the sources included.
    extends: join(root, 'tsconfig.json'),
    compilerOptions: {
      ...compilerOptions,
      noEmit: false,
      noEmitOnError: true,
      // The root, not this folder: the program includes src/ (through the path), and tsc writes a
      // file outside rootDir next to its source.  Its copies of src/ land in outDir, unused.
      rootDir: root,
      outDir,
      declaration: false,
      sourceMap: false,
    },
    include: ['session.ts'],
    exclude: [],
  };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { cwd: root });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`tsc rejected the README's ${flavour} decorator recipe:\n${stdout}${stderr}`);
  }
  const emitted = join(outDir, relative(root, dir), 'session.js');
  const js = readFileSync(emitted, 'utf8');
  // The recipe imports the package by name, which would resolve to dist/ (the package's
  // self-reference): point it at the sources under test, the module instances session() uses here.
  let target = relative(dirname(emitted), join(root, 'src', 'index.ts'));
  if (!target.startsWith('.')) target = `./${target}`;
  const linked = js.replace(/from 'koa-mikro-session';/, `from '${target}';`);
  if (linked === js) throw new Error(`the compiled ${flavour} recipe does not import 'koa-mikro-session'`);
  writeFileSync(emitted, linked);
  const module = (await import(emitted)) as { AppSession?: EntityClass<any> };
  if (typeof module.AppSession !== 'function') throw new Error(`the ${flavour} recipe exports no AppSession class`);
  return module.AppSession;
}

const IDLE_TIMEOUT = 1800;

for (const { flavour, title, compilerOptions, skip } of FLAVOURS) {
  describe.skipIf(skip)(`the README's ${title} recipe`, () => {
    let AppSession: EntityClass<any>;
    beforeAll(async () => {
      AppSession = await compile(flavour, recipes()[flavour], compilerOptions);
    });

    const routes: Record<string, Route> = {
      'POST /login': (ctx, body) => {
        ctx.session.userid = body.userid;
        return { id: ctx.session.id };
      },
      'GET /whoami': (ctx) => ({ userid: ctx.session.userid, expiresAt: ctx.session.expiresAt?.getTime() ?? null }),
      // The recipe's own column, set on the session's row as the README's UUID example reads it.
      'POST /device': (ctx, body) => {
        const row = ctx.em.getReference(AppSession, ctx.session.id) as { device?: string | null };
        row.device = body.device;
        return { ok: true };
      },
    };

    for (const db of databases) {
      describe.skipIf(db.skip)(`on ${db.name}`, () => {
        let h: Harness;
        beforeAll(async () => {
          h = await harness(db, { entity: AppSession, routes, options: { idleTimeout: IDLE_TIMEOUT } });
        });
        afterAll(() => h?.close());
        const row = (id: string) => h.orm.em.fork().findOne(AppSession, { id });

        test('MikroORM.init() takes the class without SessionBase or the embeddables listed', () => {
          expect(h.orm.config.get('entities')).toEqual([AppSession, Item]);
          const meta = h.orm.getMetadata().get(AppSession);
          expect(meta.primaryKeys).toEqual(['id']);
          expect(meta.extends).toBe(SessionBase.class);
          expect(Object.keys(meta.properties)).toEqual(
            expect.arrayContaining(['id', 'created', 'version', 'data', 'flash', 'userid', 'idle', 'device']),
          );
        });

        test('a login is seen by the next request; the row holds the user and the idle expiry', async () => {
          const client = h.client();
          const login = await client.post('/login', { userid: 42 });
          expect(login.status).toBe(200);
          expect(login.cookies).toHaveLength(1);
          const expiry = Math.floor(h.clock.ms / 1000) + IDLE_TIMEOUT;
          expect((await client.get('/whoami')).json).toEqual({ userid: 42, expiresAt: expiry * 1000 });
          const stored = await row(login.json.id);
          expect(stored).toBeInstanceOf(AppSession);
          expect(stored).toMatchObject({
            version: 1,
            userid: { userid: 42 },
            idle: { idleExpire: expiry },
            device: null,
          });
          // Another browser is not that user.
          expect((await h.client().get('/whoami')).json).toEqual({ userid: null, expiresAt: null });
        });

        test("the app's own column is written with the session", async () => {
          const client = h.client();
          const { id } = (await client.post('/login', { userid: 7 })).json;
          expect((await client.post('/device', { device: 'laptop' })).status).toBe(200);
          // The version bump shows the write went through SessionBase's optimistic lock.
          expect(await row(id)).toMatchObject({ device: 'laptop', version: 2, userid: { userid: 7 } });
        });

        test('the embedded IdleTimeout ends the session once idle', async () => {
          const client = h.client();
          const { id } = (await client.post('/login', { userid: 9 })).json;
          h.clock.advance(IDLE_TIMEOUT);
          expect((await client.get('/whoami')).json).toEqual({ userid: null, expiresAt: null });
          expect(await row(id)).toBeNull();
        });
      });
    }
  });
}
