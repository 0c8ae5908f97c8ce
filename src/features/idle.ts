import { defineEntity, p } from '@mikro-orm/core';
import { defineFeature, type Feature, type FeatureContext } from './feature.js';

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

const seconds = (context: FeatureContext) => Math.floor(context.now / 1000);

export const idleFeature: Feature<IdleTimeout> = defineFeature({
  name: 'IdleTimeout',
  property: 'idle',
  embeddable: IdleTimeout,
  settings: ['idleTimeout', 'extensionDelay', 'extensionChance', 'extensionDeadline'],
  configurableAs: 'ConfigurableIdleTimeout',
  expiry: { column: 'idleExpire', setting: 'idleTimeout', label: 'idle', slides: true },
  // Two parallel requests both extend the session: the later expiry stands.
  merge: { idleExpire: (ours, theirs) => (ours === null ? theirs : theirs === null ? ours : Math.max(ours, theirs)) },
  create(embedded, context) {
    const timeout = context.setting('idleTimeout');
    embedded.idleExpire = timeout === null ? null : seconds(context) + timeout;
  },
  verify(embedded, context) {
    const timeout = context.setting('idleTimeout');
    if (timeout === null || embedded.idleExpire === null) return undefined;
    return seconds(context) >= embedded.idleExpire ? 'idle' : undefined;
  },
  expiresAt(embedded, context) {
    return context.setting('idleTimeout') === null || embedded.idleExpire === null ? null : embedded.idleExpire * 1000;
  },
  beforeCommit(embedded, context) {
    const timeout = context.setting('idleTimeout');
    if (timeout === null) return;
    const now = seconds(context);
    const next = now + timeout;
    if (next === embedded.idleExpire) return;
    // A write (or a new session) carries the extension in its own UPDATE or INSERT.
    if (
      context.isNew ||
      context.written ||
      embedded.idleExpire === null ||
      (context.handedOut && context.hasChanges())
    ) {
      embedded.idleExpire = next;
      return;
    }
    if (readExtends(context, now - (embedded.idleExpire - timeout))) extensions.set(context, next);
  },
  async afterCommit(_, context) {
    const next = extensions.get(context);
    if (next === undefined) return;
    // A read: one targeted UPDATE of the expiry column, outside the optimistic
    // lock (it never conflicts with a write) and never moving the expiry back.
    await context.updateColumns(idleFeature, { idleExpire: { $lt: next } }, { idleExpire: next });
  },
});

/** Read extensions decided before the commit, made after it. */
const extensions = new WeakMap<FeatureContext, number>();

/** Whether a read `elapsed` seconds after the last extension extends the session. */
function readExtends(context: FeatureContext, elapsed: number): boolean {
  const delay = context.setting('extensionDelay');
  if (delay !== null && elapsed < delay) return false;
  const chance = context.setting('extensionChance');
  if (chance >= 100 || elapsed >= context.setting('extensionDeadline')) return true;
  return context.random() * 100 < chance;
}

export const configurableIdleFeature: Feature<ConfigurableIdleTimeout> = defineFeature({
  ...idleFeature,
  name: 'ConfigurableIdleTimeout',
  embeddable: ConfigurableIdleTimeout,
  includes: idleFeature,
  configurable: ['idleTimeout', 'extensionDelay', 'extensionChance', 'extensionDeadline'],
  settingsSaved(embedded, context) {
    // The expiry follows the new timeout at once: saving settings is activity.
    idleFeature.create!(embedded, context);
  },
});
