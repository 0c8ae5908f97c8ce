import { defineEntity, p } from '@mikro-orm/core';
import type { SessionContext } from '../context.js';
import { registerFeature, type Feature } from './feature.js';

/**
 * Idle timeout (OWASP): the session expires idleTimeout seconds after its last
 * activity.  Every write extends it; a read extends it too, throttled by
 * extensionDelay, extensionChance and extensionDeadline so that readers do
 * not write on every request.  The time of the last extension is not stored:
 * it is idleExpire - idleTimeout.
 */
export class IdleTimeout {
  /** Seconds since the epoch; null while the timeout is off. */
  idleExpire: number | null = null;
}

/** IdleTimeout whose timeout and extension tuning each session may change. */
export class ConfigurableIdleTimeout extends IdleTimeout {
  idleTimeout: number | null = null;
  extensionDelay: number | null = null;
  extensionChance: number | null = null;
  extensionDeadline: number | null = null;
}

const expiry = { idleExpire: p.bigint('number').nullable().index() };
defineEntity({ class: IdleTimeout, embeddable: true, properties: expiry });
defineEntity({
  class: ConfigurableIdleTimeout,
  embeddable: true,
  properties: {
    ...expiry,
    idleTimeout: p.integer().nullable(),
    extensionDelay: p.smallint().nullable(),
    extensionChance: p.smallint().nullable(),
    extensionDeadline: p.smallint().nullable(),
  },
});

const seconds = (context: SessionContext) => Math.floor(context.now / 1000);

export const idleFeature: Feature = registerFeature({
  name: 'IdleTimeout',
  property: 'idle',
  embeddable: IdleTimeout,
  settings: ['idleTimeout', 'extensionDelay', 'extensionChance', 'extensionDeadline'],
  configurableAs: 'ConfigurableIdleTimeout',
  // Two parallel requests both extend the session: the later expiry stands.
  merge: { idleExpire: (ours: number | null, theirs: number | null) => (ours === null ? theirs : theirs === null ? ours : Math.max(ours, theirs)) },
  create(embedded: IdleTimeout, context) {
    const timeout = context.setting('idleTimeout');
    embedded.idleExpire = timeout === null ? null : seconds(context) + timeout;
  },
  verify(embedded: IdleTimeout, context) {
    const timeout = context.setting('idleTimeout');
    if (timeout === null || embedded.idleExpire === null) return undefined;
    return seconds(context) >= embedded.idleExpire ? 'idle' : undefined;
  },
  expiresAt(embedded: IdleTimeout, context) {
    return context.setting('idleTimeout') === null || embedded.idleExpire === null ? null : embedded.idleExpire * 1000;
  },
  beforeCommit(embedded: IdleTimeout, context) {
    const timeout = context.setting('idleTimeout');
    if (timeout === null) return;
    const now = seconds(context);
    const next = now + timeout;
    if (next === embedded.idleExpire) return;
    // A write (or a new session) carries the extension in its own UPDATE or INSERT.
    if (context.isNew || context.written || embedded.idleExpire === null || (context.handedOut && context.hasChanges())) {
      embedded.idleExpire = next;
      return;
    }
    if (readExtends(context, now - (embedded.idleExpire - timeout))) extensions.set(context, next);
  },
  async afterCommit(_: IdleTimeout, context) {
    const next = extensions.get(context);
    if (next === undefined) return;
    // A read: one targeted UPDATE of the expiry column, outside the optimistic
    // lock (it never conflicts with a write) and never moving the expiry back.
    await context.updateColumns(property(context), { idleExpire: { $lt: next } }, { idleExpire: next });
  },
});

/** Read extensions decided before the commit, made after it. */
const extensions = new WeakMap<SessionContext, number>();

/** Whether a read `elapsed` seconds after the last extension extends the session. */
function readExtends(context: SessionContext, elapsed: number): boolean {
  const delay = context.setting('extensionDelay');
  if (delay !== null && elapsed < delay) return false;
  const chance = context.setting('extensionChance');
  if (chance >= 100 || elapsed >= context.setting('extensionDeadline')) return true;
  return context.config.random() * 100 < chance;
}

function property(context: SessionContext): string {
  return context.features.find(({ feature }) => feature === idleFeature || feature.includes === idleFeature)!.property;
}

export const configurableIdleFeature: Feature = registerFeature({
  ...idleFeature,
  name: 'ConfigurableIdleTimeout',
  embeddable: ConfigurableIdleTimeout,
  includes: idleFeature,
  configurable: ['idleTimeout', 'extensionDelay', 'extensionChance', 'extensionDeadline'],
  settingsSaved(embedded: IdleTimeout, context) {
    // The expiry follows the new timeout at once: saving settings is activity.
    idleFeature.create!(embedded, context);
  },
});
