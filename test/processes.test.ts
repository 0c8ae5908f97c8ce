import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { MikroORM } from '@mikro-orm/core';
import { CookieJar } from 'tough-cookie';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { countExpiredSessions, defineSessionEntity, generateSecretKey, IdleTimeout, Userid } from '../src/index.js';
import { CLIENT_URLS, databases, type TestDatabase } from './support/databases.js';
import { Client, type Reply } from './support/http.js';

/**
 * Scale out: one app as 3 OS processes on one database (test/support/process-app.ts, run with
 * `node`), and a browser behind a round-robin load balancer (one cookie jar, each request to the
 * next process).  Nothing a process keeps in memory may change what another one answers: a login
 * anywhere is seen everywhere, parallel writers on different processes lose no update, the
 * collectors of all processes delete each expired row once, and "log out everywhere" logs the user
 * out on every process at once.  Time moves only through each process's clock (POST /control/clock).
 */
const ROOT = join(import.meta.dirname, '..');
const APPS = 3;
const IDLE_TIMEOUT = 3600;
/** Every process's clock starts here and stands still until the test moves it. */
const START = Date.UTC(2026, 0, 1);
/** The longest a process may take to start, or the test to see an event it waits for: a deadline, not a sleep. */
const DEADLINE_MS = 20_000;

// The same definition as the app's (test/support/process-app.ts, which gets it from dist/): this one creates the table.
const ProcessSession = defineSessionEntity({
  name: 'ProcessSession',
  tableName: 'process_session',
  features: [Userid, IdleTimeout],
});

interface Line {
  event: string;
  [key: string]: any;
}

/** One app process: its URL and what it printed. */
class AppProcess {
  url = '';
  /** Its stdout, one JSON object per line. */
  readonly lines: Line[] = [];
  /** Its stderr and any stdout that isn't JSON, for failure messages. */
  output = '';
  exitCode: number | null | undefined;

  constructor(
    readonly index: number,
    readonly child: ChildProcess,
  ) {}

  events(name: string): Line[] {
    return this.lines.filter((line) => line.event === name);
  }
}

/** A browser behind the load balancer: one cookie jar, each request to the next process (or to one named). */
class Browser {
  jar = new CookieJar();
  #next = 0;

  constructor(private readonly urls: string[]) {}

  /** A client of process `index` over this browser's jar. */
  on(index: number): Client {
    const client = new Client(this.urls[index]);
    client.jar = this.jar;
    return client;
  }

  next(): Client {
    return this.on(this.#next++ % this.urls.length);
  }

  /** Puts the jar back as it is now: to present the same cookie to every process. */
  snapshot(): () => void {
    const saved = this.jar.serializeSync()!;
    return () => {
      this.jar = CookieJar.deserializeSync(saved);
    };
  }
}

/** The 3 processes of one database; stopped in afterAll, whatever happened. */
class Cluster {
  readonly apps: AppProcess[] = [];
  #waiters = new Set<() => void>();

  async start(db: TestDatabase): Promise<void> {
    const node = existsSync(join(ROOT, 'node_modules', '.bin', 'node'))
      ? join(ROOT, 'node_modules', '.bin', 'node')
      : process.execPath;
    const secret = generateSecretKey();
    for (let index = 0; index < APPS; index++) {
      const child = spawn(node, ['test/support/process-app.ts'], {
        cwd: ROOT,
        env: {
          ...process.env,
          APP_INDEX: String(index),
          DB: db.name,
          DB_URL: CLIENT_URLS[db.name as 'postgresql' | 'mariadb'],
          SESSION_SECRET: secret,
          CLOCK_MS: String(START),
          IDLE_TIMEOUT: String(IDLE_TIMEOUT),
          GC_INTERVAL: '1',
        },
        // stdin stays open: the app stops when it closes, so it can't outlive this test's process.
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const app = new AppProcess(index, child);
      this.apps.push(app);
      createInterface({ input: child.stdout! }).on('line', (text) => {
        try {
          app.lines.push(JSON.parse(text));
        } catch {
          app.output += `${text}\n`;
        }
        this.#changed();
      });
      child.stderr!.on('data', (chunk: Buffer) => (app.output += chunk.toString()));
      child.on('exit', (code) => {
        app.exitCode = code;
        this.#changed();
      });
    }
    await this.until('every process listens', () => this.apps.every((app) => app.events('listening').length > 0));
    for (const app of this.apps) app.url = `http://127.0.0.1:${app.events('listening')[0].port}`;
  }

  #changed(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** Resolves when `condition` holds, checked at each line a process prints; fails if a process exits. */
  until(what: string, condition: () => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const dead = this.apps.find((app) => app.exitCode !== undefined);
        if (dead || condition()) {
          clearTimeout(timer);
          this.#waiters.delete(check);
          if (dead) reject(new Error(`app ${dead.index} exited with ${dead.exitCode} before ${what}:\n${dead.output}`));
          else resolve();
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`not within ${DEADLINE_MS / 1000} s: ${what}\n${this.apps.map((a) => a.output).join('\n')}`));
      }, DEADLINE_MS);
      this.#waiters.add(check);
      check();
    });
  }

  browser(): Browser {
    return new Browser(this.apps.map((app) => app.url));
  }

  /** Sends the same control request to every process at once. */
  control(path: string, body: unknown = {}): Promise<Reply[]> {
    return Promise.all(this.apps.map((app) => new Client(app.url).post(path, body)));
  }

  events(name: string): Line[] {
    return this.apps.flatMap((app) => app.events(name));
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.apps.map(async ({ child, exitCode }) => {
        if (exitCode !== undefined || child.exitCode !== null) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}

/** Every child of this file, killed outright if the test process exits with any still running. */
const clusters = new Set<Cluster>();
process.on('exit', () => {
  for (const cluster of clusters)
    for (const { child } of cluster.apps) if (child.exitCode === null) child.kill('SIGKILL');
});

const statuses = (replies: Reply[]) => replies.map((reply) => reply.status).sort();

for (const db of databases.filter((db) => db.name !== 'sqlite')) {
  describe.skipIf(db.skip)(`${APPS} app processes on one ${db.name} database`, () => {
    let orm: MikroORM;
    const cluster = new Cluster();

    beforeAll(async () => {
      if (!existsSync(join(ROOT, 'dist', 'index.js')))
        throw new Error('dist/ is missing: run npm run build (npm test does) before the multi-process test');
      orm = await db.init([ProcessSession]);
      clusters.add(cluster);
      await cluster.start(db);
    });

    afterAll(async () => {
      await cluster.stop();
      clusters.delete(cluster);
      await orm?.close(true);
    });

    test('a login on one process, a write on another and a read on a third see one session', async () => {
      const browser = cluster.browser();
      const login = await browser.on(0).post('/login', { userid: 1 });
      expect(login.status).toBe(200);
      expect(login.json).toEqual({ app: 0, userid: 1 });
      expect(login.cookies).toHaveLength(1);
      expect((await browser.on(1).post('/set', { cart: ['A1'] })).json).toEqual({ app: 1, ok: true });
      expect((await browser.on(2).get('/get?key=cart')).json).toEqual({ app: 2, value: ['A1'] });
      expect((await browser.on(2).get('/whoami')).json).toEqual({ app: 2, userid: 1, isNew: false });

      // Round robin: each step is written on one process and read on the next.
      for (let step = 0; step < 2 * APPS; step++) {
        const write = await browser.next().post('/set', { step });
        const read = await browser.next().get('/get?key=step');
        expect(read.json.value).toBe(step);
        expect(read.json.app).toBe((write.json.app + 1) % APPS);
      }
      expect(await orm.em.fork().count(ProcessSession, { userid: { userid: 1 } })).toBe(1);
    });

    /** Holds `count` requests of one browser after they read the session, round robin over the processes. */
    async function held(browser: Browser, count: number, body: (i: number) => Record<string, unknown>) {
      await cluster.control('/control/hold');
      const before = cluster.events('held').length;
      const requests = Array.from({ length: count }, (_, i) =>
        browser.next().post(body(i).path as string, { ...body(i), hold: true }),
      );
      await cluster.until(`${count} requests wait at the gates`, () => cluster.events('held').length >= before + count);
      await cluster.control('/control/release');
      return Promise.all(requests);
    }

    test('parallel increments of one key on 3 processes: one commits, the others are 409, none is lost', async () => {
      const browser = cluster.browser();
      await browser.on(0).post('/set', { count: 0 });
      // All 9 read count = 0 before any of them writes: only one can stand.
      const replies = await held(browser, 9, () => ({ path: '/increment', key: 'count' }));
      expect(statuses(replies)).toEqual([200, ...Array(8).fill(409)]);
      expect(replies.filter((r) => r.status === 409).every((r) => /concurrent request/.test(r.text))).toBe(true);
      expect((await browser.next().get('/get?key=count')).json.value).toBe(1);
    });

    test('parallel writes of different keys on 3 processes are merged: all commit', async () => {
      const browser = cluster.browser();
      await browser.on(0).post('/set', { start: true });
      const writers = 12; // each loses at most 11 races: within the library's 16 merges
      const replies = await held(browser, writers, (i) => ({ path: '/increment', key: `k${i}` }));
      expect(statuses(replies)).toEqual(Array(writers).fill(200));
      // Spread over the processes, as the balancer sent them.
      expect(new Set(replies.map((r) => r.json.app))).toEqual(new Set([0, 1, 2]));
      const data = await Promise.all(
        Array.from({ length: writers }, (_, i) => browser.on(i % APPS).get(`/get?key=k${i}`)),
      );
      expect(data.map((r) => r.json.value)).toEqual(Array(writers).fill(1));
    });

    test('free-running appends to one key: every 2xx is in the list once, every other answer is 409', async () => {
      const browser = cluster.browser();
      await browser.on(0).post('/set', { list: [] });
      const replies = await Promise.all(
        Array.from({ length: 30 }, (_, i) => browser.next().post('/append', { key: 'list', value: `v${i}` })),
      );
      const committed = replies.flatMap((reply, i) => (reply.status === 200 ? [`v${i}`] : []));
      expect(replies.every((r) => r.status === 200 || r.status === 409)).toBe(true);
      expect(committed.length).toBeGreaterThanOrEqual(1);
      const list = (await browser.next().get('/get?key=list')).json.value as string[];
      expect([...list].sort()).toEqual([...committed].sort());
    });

    test('increments of one key retried on 409 until they commit: the count is exact', async () => {
      const browser = cluster.browser();
      await browser.on(0).post('/set', { n: 0 });
      const writers = 24;
      const attempts = await Promise.all(
        Array.from({ length: writers }, async () => {
          for (let attempt = 1; attempt <= 100; attempt++) {
            const reply = await browser.next().post('/increment', { key: 'n' });
            if (reply.status === 200) return attempt;
            expect(reply.status).toBe(409);
          }
          throw new Error('no commit in 100 attempts');
        }),
      );
      expect((await browser.next().get('/get?key=n')).json.value).toBe(writers);
      expect(attempts.some((n) => n > 1)).toBe(true); // they did race
    });

    /** A user with 3 devices, each logged in on another process, and another user as a witness. */
    async function devices(userid: number) {
      const phones = Array.from({ length: APPS }, () => cluster.browser());
      for (const [i, phone] of phones.entries()) await phone.on(i).post('/login', { userid });
      const witness = cluster.browser();
      await witness.on(0).post('/login', { userid: userid + 1 });
      // Every process has served every device (its in-memory cookie cache holds them all).
      for (const phone of [...phones, witness])
        for (let i = 0; i < APPS; i++) expect((await phone.on(i).get('/whoami')).json.userid).not.toBeNull();
      return { phones, witness };
    }

    /** What each process answers to the cookie each browser holds now: the same cookie goes to every process. */
    async function everywhere(browser: Browser): Promise<(number | null)[]> {
      const restore = browser.snapshot();
      const answers: (number | null)[] = [];
      for (let i = 0; i < APPS; i++) {
        restore();
        answers.push((await browser.on(i).get('/whoami')).json.userid);
      }
      return answers;
    }

    test('log out everywhere on one process logs the user out on every process at once', async () => {
      const { phones, witness } = await devices(20);
      const revoke = await phones[0].on(1).post('/revoke', {});
      expect(revoke.json).toEqual({ app: 1, revoked: APPS });
      for (const phone of phones) expect(await everywhere(phone)).toEqual([null, null, null]);
      expect(await everywhere(witness)).toEqual([21, 21, 21]);
      expect(await orm.em.fork().count(ProcessSession, { userid: { userid: 20 } })).toBe(0);
    });

    test("the middleware's revokeUserSessions() on one process logs the user out on every process", async () => {
      const { phones, witness } = await devices(30);
      const reply = await new Client(cluster.apps[2].url).post('/control/revoke-user', { userid: 30 });
      expect(reply.json).toEqual({ revoked: APPS });
      for (const phone of phones) expect(await everywhere(phone)).toEqual([null, null, null]);
      expect(await everywhere(witness)).toEqual([31, 31, 31]);
    });

    test('a write in flight on one process while another logs the user out everywhere: 409, nothing comes back', async () => {
      const { phones } = await devices(40);
      await cluster.control('/control/hold');
      const before = cluster.events('held').length;
      // Each device writes on another process than the one that revokes, and waits after its read.
      const inFlight = phones.map((phone, i) =>
        phone.on((i % (APPS - 1)) + 1).post('/increment', { key: 'late', hold: true }),
      );
      await cluster.until('the writes wait at the gates', () => cluster.events('held').length >= before + APPS);
      const revoke = await phones[0].on(0).post('/revoke', {});
      expect(revoke.json.revoked).toBe(APPS);
      await cluster.control('/control/release');
      expect(statuses(await Promise.all(inFlight))).toEqual(Array(APPS).fill(409));
      expect(await orm.em.fork().count(ProcessSession, { userid: { userid: 40 } })).toBe(0);
      for (const phone of phones) expect(await everywhere(phone)).toEqual([null, null, null]);
    });

    test('gcInterval in every process: each expired row is deleted once in all, and requests are answered meanwhile', async () => {
      const now = () => Math.floor(START / 1000);
      // Expired once the clocks move on: sessions made over HTTP, and many rows written directly.
      for (let i = 0; i < 30; i++) await cluster.browser().next().post('/set', { i });
      // Rows of sessions that were never used again, written directly: the columns of the session entity.
      const insert = async (count: number, idleExpire: number) => {
        const rows = Array.from({ length: count }, () => [
          randomBytes(32).toString('hex'),
          now(),
          1,
          '{}',
          '{}',
          idleExpire,
        ]);
        await orm.em
          .getConnection()
          .execute(
            `insert into process_session (id, created, version, data, flash, idle_expire) values ${rows.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
            rows.flat(),
          );
      };
      for (let batch = 0; batch < 30; batch++) await insert(1000, now() + IDLE_TIMEOUT);
      await insert(50, now() + 100 * IDLE_TIMEOUT); // still valid later
      const later = START + 2 * IDLE_TIMEOUT * 1000;
      const expiredLater = () =>
        countExpiredSessions({ orm, entity: ProcessSession, idleTimeout: IDLE_TIMEOUT, clock: () => later });
      const expired = await expiredLater();
      const rows = await orm.em.fork().count(ProcessSession, {});
      expect(expired).toBeGreaterThan(30_000);
      const stats = async () =>
        (await Promise.all(cluster.apps.map((app) => new Client(app.url).get('/control/stats')))).map((r) => r.json);
      const deletedBefore = (await stats()).reduce((sum, s) => sum + s.gc.deleted, 0);
      const printedBefore = cluster.events('gc').reduce((sum, line) => sum + line.deleted, 0);
      expect(deletedBefore).toBe(printedBefore);

      await cluster.control('/control/clock', { ms: later });
      // Browsers of the new time keep writing, each in turn on every process, while the collectors run.
      const browsers = await Promise.all(
        Array.from({ length: 9 }, async (_, i) => {
          const browser = cluster.browser();
          await browser.on(i % APPS).post('/login', { userid: 100 + i });
          return browser;
        }),
      );
      let collecting = true;
      const load = browsers.map(async (browser) => {
        const answers: number[] = [];
        while (collecting) answers.push((await browser.next().post('/increment', { key: 'n' })).status);
        return { answers, n: (await browser.next().get('/get?key=n')).json.value };
      });
      const collections = await cluster.control('/control/gc');
      collecting = false;
      const loads = await Promise.all(load);
      expect(collections.map((reply) => reply.status)).toEqual([200, 200, 200]);

      // Every request was answered, and none was lost.
      for (const { answers, n } of loads) {
        expect(answers.every((status) => status === 200)).toBe(true);
        expect(n).toBe(answers.length);
      }
      // Until nothing expired is left, then once more: a run in flight when the count reached 0 has reported.
      for (let round = 0; round < 5 && (await expiredLater()) > 0; round++) await cluster.control('/control/gc');
      expect(await expiredLater()).toBe(0);
      await cluster.control('/control/gc');

      const after = await stats();
      expect(after.flatMap((s) => s.gc.errors)).toEqual([]);
      const deleted = after.reduce((sum, s) => sum + s.gc.deleted, 0) - deletedBefore;
      expect(deleted).toBe(expired);
      // What the processes printed agrees.
      await cluster.until(
        'the session:gc lines add up',
        () => cluster.events('gc').reduce((sum, line) => sum + line.deleted, 0) - printedBefore === expired,
      );
      expect(cluster.events('gc-error')).toEqual([]);
      expect(await orm.em.fork().count(ProcessSession, {})).toBe(rows - expired + browsers.length);
      // Requests were answered while collections ran, on the processes running them.
      expect(after.reduce((sum, s) => sum + s.requests.insideCollection, 0)).toBeGreaterThan(0);
      if (process.env.PROCESSES_VERBOSE)
        console.info(
          `${db.name}: ${expired} expired rows deleted by process ${after.map((s) => s.gc.deleted).join(' / ')}; ` +
            `${loads.reduce((sum, l) => sum + l.answers.length, 0)} requests during the collections, ` +
            `${after.map((s) => s.requests.insideCollection).join(' / ')} of them inside one`,
        );
    });
  });
}
