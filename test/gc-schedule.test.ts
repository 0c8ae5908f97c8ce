import { afterEach, describe, expect, test, vi } from 'vitest';
import { ConfigurationError, defineSessionEntity, IdleTimeout, session } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, SECRET, type Harness } from './support/app.js';

/** The in-process collector (gcInterval): runs on a randomised timer, one at a time, and never crashes the app. */
const Expiring = defineSessionEntity({
  name: 'ExpiringSession',
  tableName: 'gc_schedule_session',
  features: [IdleTimeout],
});
const sqlite = databases.find((db) => db.name === 'sqlite')!;

describe('gcInterval', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.sessions.close();
    await h?.close();
    h = undefined;
    vi.useRealTimers();
  });

  async function start(gcInterval: number) {
    h = await harness(sqlite, { entity: Expiring, options: { idleTimeout: 10, gcInterval } });
    const results: unknown[] = [];
    const errors: unknown[] = [];
    h.app.on('session:gc', (result) => results.push(result));
    h.app.on('session:gc-error', (error) => errors.push(error));
    return { results, errors };
  }

  const rows = () => h!.orm.em.fork().count(Expiring, {});

  /** Three sessions; two of them then expire (the third is refreshed after the clock moved). */
  async function sessions() {
    const clients = [h!.client(), h!.client(), h!.client()];
    for (const client of clients) await client.post('/set', { a: 1 });
    h!.clock.advance(20);
    await clients[2].post('/set', { a: 2 }); // a fresh session: its expired row is replaced
    return clients;
  }

  test('a run deletes the expired sessions and reports the count on the app', async () => {
    const { results } = await start(3600);
    await sessions();
    expect(await rows()).toBe(3);
    await h!.sessions.collectGarbage();
    expect(await rows()).toBe(1);
    expect(results).toEqual([{ deleted: 2, batches: 1 }]);
  });

  test('never two runs at once in one process', async () => {
    const { results } = await start(3600);
    await sessions();
    const sql = await h!.count(() => Promise.all([h!.sessions.collectGarbage(), h!.sessions.collectGarbage()]));
    expect(results).toHaveLength(1);
    expect(sql.filter((statement) => /^delete/i.test(statement))).toHaveLength(1);
  });

  test('the timer runs it after a randomised interval of 80-120 % of gcInterval, and close() stops it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { results } = await start(60);
    await sessions();
    await vi.advanceTimersByTimeAsync(47_000); // before 80 % of the interval: nothing yet
    expect(results).toEqual([]);
    await vi.advanceTimersByTimeAsync(25_000); // past 120 %: exactly one run
    await vi.waitFor(() => expect(results).toHaveLength(1));
    expect(await rows()).toBe(1);
    await h!.sessions.close();
    await vi.advanceTimersByTimeAsync(10 * 72_000);
    expect(results).toHaveLength(1);
  });

  test('a failed run is reported as session:gc-error, not thrown', async () => {
    const { errors } = await start(3600);
    await sessions();
    await h!.orm.close(true); // the database goes away under the collector
    await expect(h!.sessions.collectGarbage()).resolves.toBeUndefined();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(Error);
  });

  test('start-up errors name the option', async () => {
    const orm = await sqlite.init([Expiring]);
    try {
      const make = (options: Record<string, unknown>) => () =>
        session({ orm, entity: Expiring, secret: SECRET, ...options });
      expect(make({ gcInterval: 0, idleTimeout: 10 })).toThrow(ConfigurationError);
      expect(make({ gcInterval: 0, idleTimeout: 10 })).toThrow(/option gcInterval/);
      expect(make({ gcInterval: 60 })).toThrow(/no idle or absolute timeout is on/);
    } finally {
      await orm.close(true);
    }
  });
});
