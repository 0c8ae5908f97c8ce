import type { EntityClass } from '@mikro-orm/core';

/**
 * A feature is one embeddable class plus the behaviour the middleware runs
 * for it.  Each feature lives in one module of this folder and registers
 * itself here; the middleware only ever iterates over the features the
 * session entity embeds, so an absent feature costs nothing.
 */
export interface Feature {
  /** Name used in messages, e.g. 'Userid'. */
  readonly name: string;
  /** Property under which defineSessionEntity embeds it. */
  readonly property: string;
  /** The embeddable class; a subclass found in the entity's metadata matches too. */
  readonly embeddable: EntityClass<object>;
}

const registry: Feature[] = [];

export function registerFeature(feature: Feature): void {
  registry.push(feature);
}

/** The feature whose embeddable is `cls` or one of its ancestors. */
export function featureOf(cls: unknown): Feature | undefined {
  for (let c = cls; typeof c === 'function' && c !== Function.prototype; c = Object.getPrototypeOf(c)) {
    const found = registry.find((feature) => feature.embeddable === c);
    if (found) return found;
  }
  return undefined;
}
