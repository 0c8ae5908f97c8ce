import type { EntityName, MikroORM } from '@mikro-orm/core';
import { collectGarbage, type GarbageCollectionResult } from './gc.js';

/**
 * The opt-in in-process collector (gcInterval), for small deployments that
 * run no cron job.  Safe with many app instances: each run waits a randomised
 * interval (±20 %) so instances drift apart, one process never runs two at
 * once, and collectGarbage() deletes in batches that, on PostgreSQL, skip the
 * rows another instance has locked.  A failure is reported, never thrown: a
 * collector must not crash the app it cleans up after.
 */
export interface GcScheduleOptions {
  orm: MikroORM;
  entity: EntityName<any>;
  idleTimeout: number | null;
  absoluteTimeout: number | null;
  /** Seconds between runs, on average. */
  interval: number;
  clock: () => number;
  random: () => number;
  onResult(result: GarbageCollectionResult): void;
  onError(error: unknown): void;
}

export class GcSchedule {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(private readonly options: GcScheduleOptions) {
    this.#plan();
  }

  /** Runs one collection now, unless one is already running (then waits for that one). */
  run(): Promise<void> {
    return (this.#running ??= this.#collect().finally(() => (this.#running = undefined)));
  }

  /** No further runs; resolves when a run in progress has finished. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  #plan(): void {
    if (this.#stopped) return;
    const { interval, random } = this.options;
    const delay = interval * 1000 * (0.8 + 0.4 * random());
    this.#timer = setTimeout(() => void this.run().then(() => this.#plan()), delay);
    // The schedule never keeps a process alive that is otherwise done.
    this.#timer.unref();
  }

  async #collect(): Promise<void> {
    const { orm, entity, idleTimeout, absoluteTimeout, clock, onResult, onError } = this.options;
    try {
      onResult(await collectGarbage({ orm, entity, idleTimeout, absoluteTimeout, clock }));
    } catch (error) {
      onError(error);
    }
  }
}
