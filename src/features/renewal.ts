import { timingSafeEqual } from 'node:crypto';
import { defineEntity, p } from '@mikro-orm/core';
import { secureRandom } from '../random.js';
import { defineFeature, type Feature, type FeatureContext } from './feature.js';

/**
 * Renewal timeout (OWASP session renewal, with theft detection).  Besides its
 * token the cookie carries a 128-bit renewal id.  Every renewalTimeout seconds
 * the session offers the client a new id and keeps accepting the old one
 * until the client presents the new one (the acknowledgement); unacknowledged,
 * the offer is repeated every renewalTryEvery seconds.  Once acknowledged the
 * old id is dead: presenting it, or any unknown id, destroys the session and
 * raises session:renewal-violation, the sign that the cookie was copied.
 *
 * Grace window: for renewalTryEvery seconds after the acknowledgement, the
 * previous id is still accepted, so that requests a browser sent in parallel
 * with the acknowledging one are not taken for theft.
 *
 * The offer and the acknowledgement are targeted, conditional UPDATEs of these
 * columns only, made after the request's commit: parallel requests cannot both
 * win, a loser just sends no offer, and they never conflict with a write of
 * the session's data.
 */
export class RenewalTimeout {
  /** The id the client holds (hex). */
  renewalId: string | null = null;
  /** The id offered and not yet acknowledged. */
  renewalNext: string | null = null;
  /** The id before the last acknowledgement, accepted until renewalGraceEnd. */
  renewalPrev: string | null = null;
  /** Seconds since the epoch: when to offer (or offer again). */
  renewalDue: number | null = null;
  renewalGraceEnd: number | null = null;
}

/** RenewalTimeout whose timings each session may change. */
export class ConfigurableRenewalTimeout extends RenewalTimeout {
  renewalTimeout: number | null = null;
  renewalTryEvery: number | null = null;
}

/** Bytes of a renewal id in the cookie, after the token. */
export const RENEWAL_ID_BYTES = 16;

const columns = {
  renewalId: p.string().length(32).nullable(),
  renewalNext: p.string().length(32).nullable(),
  renewalPrev: p.string().length(32).nullable(),
  renewalDue: p.bigint('number').nullable(),
  renewalGraceEnd: p.bigint('number').nullable(),
};
defineEntity({ class: RenewalTimeout, embeddable: true, properties: columns });
defineEntity({
  class: ConfigurableRenewalTimeout,
  embeddable: true,
  properties: { ...columns, renewalTimeout: p.integer().nullable(), renewalTryEvery: p.smallint().nullable() },
});

const seconds = (context: FeatureContext) => Math.floor(context.now / 1000);
const newId = () => secureRandom(RENEWAL_ID_BYTES).toString('hex');

function same(presented: Buffer | undefined, stored: string | null): boolean {
  if (!presented || stored === null) return false;
  const expected = Buffer.from(stored, 'hex');
  return expected.length === presented.length && timingSafeEqual(expected, presented);
}

/** A targeted UPDATE of renewal columns, applied only if `expect` still holds; true if it did. */
function update(
  context: FeatureContext,
  expect: Partial<RenewalTimeout>,
  values: Partial<RenewalTimeout>,
): Promise<boolean> {
  return context.updateColumns(renewalFeature, expect, values);
}

function schedule(embedded: RenewalTimeout, context: FeatureContext): void {
  const timeout = context.setting('renewalTimeout');
  embedded.renewalDue = timeout === null ? null : seconds(context) + timeout;
}

export const renewalFeature: Feature<RenewalTimeout> = defineFeature({
  name: 'RenewalTimeout',
  property: 'renewal',
  embeddable: RenewalTimeout,
  settings: ['renewalTimeout', 'renewalTryEvery'],
  configurableAs: 'ConfigurableRenewalTimeout',
  cookieBytes: RENEWAL_ID_BYTES,
  create(embedded, context) {
    embedded.renewalId = newId();
    embedded.renewalNext = embedded.renewalPrev = embedded.renewalGraceEnd = null;
    schedule(embedded, context);
    context.cookieExtra = Buffer.from(embedded.renewalId, 'hex');
  },
  verify(embedded, context) {
    const presented = context.presentedExtra;
    // Rows made while the feature was off have no id yet: adopt the one presented.
    // A re-issued cookie (key rotation, say) carries the id the client holds.
    context.cookieExtra = presented;
    if (embedded.renewalId === null) return undefined;
    if (same(presented, embedded.renewalId)) return undefined;
    if (same(presented, embedded.renewalNext)) {
      pending.set(context, 'acknowledge');
      return undefined;
    }
    if (
      same(presented, embedded.renewalPrev) &&
      embedded.renewalGraceEnd !== null &&
      seconds(context) < embedded.renewalGraceEnd
    ) {
      // Should this response re-send the cookie, it carries the id the browser acknowledged, not the dying one.
      context.cookieExtra = Buffer.from(embedded.renewalId, 'hex');
      return undefined;
    }
    return context.setting('renewalTimeout') === null ? undefined : 'renewal-violation';
  },
  async afterCommit(embedded, context) {
    if (context.isNew) return; // a new session's cookie carries its id already
    const now = seconds(context);
    const timeout = context.setting('renewalTimeout');
    const presented = context.presentedExtra?.toString('hex') ?? null;
    if (pending.get(context) === 'acknowledge') {
      const acknowledged = await update(
        context,
        { renewalNext: embedded.renewalNext },
        {
          renewalId: embedded.renewalNext,
          renewalNext: null,
          renewalPrev: embedded.renewalId,
          renewalDue: timeout === null ? null : now + timeout,
          renewalGraceEnd: now + context.setting('renewalTryEvery'),
        },
      );
      // A parallel request acknowledged first: the presented id is current either way.
      void acknowledged;
      return;
    }
    if (embedded.renewalId === null) {
      // First request since the feature was turned on for this row.
      await update(
        context,
        { renewalId: null },
        { renewalId: presented ?? newId(), renewalDue: timeout === null ? null : now + timeout },
      );
      return;
    }
    if (timeout === null || embedded.renewalDue === null || now < embedded.renewalDue) return;
    if (!same(context.presentedExtra, embedded.renewalId)) return; // a grace-window request: no offer
    const offer = embedded.renewalNext ?? newId();
    const retry = now + context.setting('renewalTryEvery');
    // Offer (or offer again); only the request whose UPDATE wins sends the id.
    if (
      await update(
        context,
        { renewalNext: embedded.renewalNext, renewalDue: embedded.renewalDue },
        { renewalNext: offer, renewalDue: retry },
      )
    ) {
      context.cookieExtra = Buffer.from(offer, 'hex');
      context.sendCookie = true;
    }
  },
});

/** Per-request notes between verify and beforeCommit. */
const pending = new WeakMap<FeatureContext, 'acknowledge'>();

export const configurableRenewalFeature: Feature<ConfigurableRenewalTimeout> = defineFeature({
  ...renewalFeature,
  name: 'ConfigurableRenewalTimeout',
  embeddable: ConfigurableRenewalTimeout,
  includes: renewalFeature,
  configurable: ['renewalTimeout', 'renewalTryEvery'],
  settingsSaved: schedule,
});
