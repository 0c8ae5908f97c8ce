import { defineEntity, p } from '@mikro-orm/core';
import { defineFeature, type Feature, type FeatureContext } from './feature.js';

/** Absolute timeout (OWASP): the session expires absoluteTimeout seconds after its creation, whatever the activity. */
export class AbsoluteTimeout {
  /** Seconds since the epoch; null while the timeout is off. */
  absoluteExpire: number | null = null;
}

/** AbsoluteTimeout whose timeout each session may change. */
export class ConfigurableAbsoluteTimeout extends AbsoluteTimeout {
  absoluteTimeout: number | null = null;
}

const expiry = { absoluteExpire: p.bigint('number').nullable().index() };
defineEntity({ class: AbsoluteTimeout, embeddable: true, properties: expiry });
defineEntity({
  class: ConfigurableAbsoluteTimeout,
  embeddable: true,
  properties: { ...expiry, absoluteTimeout: p.integer().nullable() },
});

/** Counted from the row's creation, so regenerating the id does not restart it. */
function schedule(embedded: AbsoluteTimeout, context: FeatureContext): void {
  const timeout = context.setting('absoluteTimeout');
  embedded.absoluteExpire = timeout === null ? null : context.row!.created + timeout;
}

export const absoluteFeature: Feature<AbsoluteTimeout> = defineFeature({
  name: 'AbsoluteTimeout',
  property: 'absolute',
  embeddable: AbsoluteTimeout,
  settings: ['absoluteTimeout'],
  configurableAs: 'ConfigurableAbsoluteTimeout',
  expiry: { column: 'absoluteExpire', setting: 'absoluteTimeout', label: 'absolute', slides: false },
  create: schedule,
  verify(embedded, context) {
    if (context.setting('absoluteTimeout') === null || embedded.absoluteExpire === null) return undefined;
    return Math.floor(context.now / 1000) >= embedded.absoluteExpire ? 'absolute' : undefined;
  },
  expiresAt(embedded, context) {
    return context.setting('absoluteTimeout') === null || embedded.absoluteExpire === null
      ? null
      : embedded.absoluteExpire * 1000;
  },
  beforeCommit(embedded, context) {
    // A session created while the timeout was off gets its expiry once it is turned on.
    if (embedded.absoluteExpire === null && context.setting('absoluteTimeout') !== null) schedule(embedded, context);
  },
});

export const configurableAbsoluteFeature: Feature<ConfigurableAbsoluteTimeout> = defineFeature({
  ...absoluteFeature,
  name: 'ConfigurableAbsoluteTimeout',
  embeddable: ConfigurableAbsoluteTimeout,
  includes: absoluteFeature,
  configurable: ['absoluteTimeout'],
  settingsSaved: schedule,
});
