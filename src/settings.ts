import { stringifySetCookie } from 'cookie';
import { z } from 'zod';
import { ConfigurationError, SettingsError } from './errors.js';

/**
 * Settings: the options a route can read back as `ctx.session.settings`.
 * Each is declared once here, with its default and its rule; `session()`
 * validates them once at start-up and never again per request.
 */

/** RFC 6265 cookie-name: an RFC 2616 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Cookie attribute values may not carry control characters or ';'. */
const ATTRIBUTE = /^[^\x00-\x1f\x7f;]*$/;
const MAX_SECONDS = 100_000_000;

const MAX_SMALL = 32_767;

const seconds = (what: string, max = MAX_SECONDS) =>
  z
    .int(`${what} must be a whole number of seconds`)
    .min(1, `${what} must be at least 1 second`)
    .max(max, `${what} must be at most ${max} seconds`);

export const settingsSchema = z
  .object({
    /** Name of the cookie; a `__Host-` name requires Secure, Path=/ and no Domain. */
    cookieName: z
      .string()
      .regex(TOKEN, "cookieName must be an RFC 2616 token (letters, digits and !#$%&'*+-.^_`|~)")
      .max(255)
      .default('session'),
    /** Max-Age of the cookie in seconds; null makes a browser-session cookie. */
    cookieMaxAge: seconds('cookieMaxAge').nullable().default(null),
    /** Path of the cookie. */
    cookiePath: z
      .string()
      .startsWith('/', 'cookiePath must start with "/"')
      .max(255, 'cookiePath must be at most 255 characters')
      .regex(ATTRIBUTE, 'cookiePath may not contain ";" or control characters')
      .default('/'),
    /** Domain of the cookie; null means the request's host only. */
    cookieDomain: z
      .string()
      .min(1, 'cookieDomain must be non-empty or null')
      .max(255, 'cookieDomain must be at most 255 characters')
      .regex(ATTRIBUTE, 'cookieDomain may not contain ";" or control characters')
      .nullable()
      .default(null),
    /** Secure attribute; 'auto' follows ctx.secure (which honours app.proxy). */
    cookieSecure: z
      .union([z.boolean(), z.literal('auto')], 'cookieSecure must be true, false or "auto"')
      .default(false),
    /** HttpOnly attribute: keeps the cookie away from scripts. */
    cookieHttpOnly: z.boolean('cookieHttpOnly must be a boolean').default(true),
    /** SameSite attribute; 'none' requires Secure; false omits the attribute. */
    cookieSameSite: z
      .union(
        [z.enum(['lax', 'strict', 'none']), z.literal(false)],
        'cookieSameSite must be "lax", "strict", "none" or false',
      )
      .default('lax'),
    /** Idle timeout (OWASP): the session expires this long after its last activity; null turns it off. */
    idleTimeout: seconds('idleTimeout').nullable().default(null),
    /** Absolute timeout (OWASP): the session expires this long after its creation; null turns it off. */
    absoluteTimeout: seconds('absoluteTimeout').nullable().default(null),
    /** Renewal timeout (OWASP): every this many seconds the cookie's renewal id is rotated; null turns it off. */
    renewalTimeout: seconds('renewalTimeout').nullable().default(null),
    /** An unacknowledged renewal is offered again after this many seconds. */
    renewalTryEvery: seconds('renewalTryEvery', MAX_SMALL).default(5),
    /** No read-triggered idle extension sooner than this many seconds after the last one; null: no delay. */
    extensionDelay: seconds('extensionDelay', MAX_SMALL).nullable().default(null),
    /** Once an extension is allowed, a read makes it with this chance (percent). */
    extensionChance: z
      .int('extensionChance must be a whole percentage')
      .min(1, 'extensionChance must be at least 1')
      .max(100, 'extensionChance must be at most 100')
      .default(100),
    /** This many seconds after the last extension, a read always extends, whatever the chance. */
    extensionDeadline: seconds('extensionDeadline', MAX_SMALL).default(1),
  })
  .superRefine((s, ctx) => {
    // With chance < 100 a read extends for sure only after the deadline: it must come before the idle expiry,
    // and after the delay (before it no extension happens at all).
    if (s.extensionChance < 100 && s.idleTimeout !== null && s.idleTimeout <= s.extensionDeadline) {
      ctx.addIssue({
        code: 'custom',
        path: ['extensionDeadline'],
        message:
          `with extensionChance below 100, idleTimeout (${s.idleTimeout}) must be greater than ` +
          `extensionDeadline (${s.extensionDeadline})`,
      });
    }
    if (s.extensionChance < 100 && s.extensionDelay !== null && s.extensionDeadline <= s.extensionDelay) {
      ctx.addIssue({
        code: 'custom',
        path: ['extensionDeadline'],
        message:
          `with extensionChance below 100, extensionDeadline (${s.extensionDeadline}) must be greater than ` +
          `extensionDelay (${s.extensionDelay})`,
      });
    }
    if (s.idleTimeout !== null && s.extensionDelay !== null && s.extensionDelay >= s.idleTimeout) {
      ctx.addIssue({
        code: 'custom',
        path: ['extensionDelay'],
        message:
          `extensionDelay (${s.extensionDelay}) must be less than idleTimeout (${s.idleTimeout}), or reads ` +
          `could never keep the session alive`,
      });
    }
    if (s.cookieSameSite === 'none' && s.cookieSecure === false) {
      ctx.addIssue({
        code: 'custom',
        path: ['cookieSameSite'],
        message:
          'cookieSameSite "none" requires cookieSecure: true (or "auto"): browsers reject SameSite=None without Secure',
      });
    }
    if (
      s.cookieName.startsWith('__Host-') &&
      (s.cookieSecure === false || s.cookiePath !== '/' || s.cookieDomain !== null)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['cookieName'],
        message: 'a "__Host-" cookieName requires cookieSecure: true (or "auto"), cookiePath "/" and cookieDomain null',
      });
    }
    if (s.cookieName.startsWith('__Secure-') && s.cookieSecure === false) {
      ctx.addIssue({
        code: 'custom',
        path: ['cookieName'],
        message: 'a "__Secure-" cookieName requires cookieSecure: true (or "auto")',
      });
    }
  });

export type Settings = Readonly<z.output<typeof settingsSchema>>;
export type SettingsInput = z.input<typeof settingsSchema>;
export type SettingName = keyof Settings;
export const settingNames = Object.keys(settingsSchema.shape) as SettingName[];

/** Validates the settings part of the options; throws a ConfigurationError naming the setting. */
export function resolveSettings(input: Record<string, unknown>): Settings {
  const picked: Record<string, unknown> = {};
  for (const name of settingNames) if (input[name] !== undefined) picked[name] = input[name];
  const problem = validate(picked);
  if (typeof problem === 'string') throw new ConfigurationError(`invalid option ${problem}`);
  return Object.freeze(problem);
}

/** The validated settings, or a message naming the first bad one. */
export function validate(input: Record<string, unknown>): Settings | string {
  const result = settingsSchema.safeParse(input);
  return result.success ? result.data : describeIssue(result.error.issues[0], input);
}

function describeIssue(issue: z.core.$ZodIssue, input: Record<string, unknown>): string {
  const name = String(issue.path[0] ?? 'options');
  const got =
    name in input && issue.code !== 'custom' ? ` (got ${JSON.stringify(input[name]) ?? String(input[name])})` : '';
  const message =
    issue.message.startsWith(name) || issue.code === 'custom' ? issue.message : `${name}: ${issue.message}`;
  return `${name}: ${message}${got}`;
}

/**
 * Why the serializer would refuse these attributes ("cookiePath: ..."), or
 * undefined.  Also for per-session values (a refused one must fail its
 * save(), not every later response) and for the attributes a cookie carried.
 */
export function unwritable(settings: Pick<Settings, 'cookieName' | 'cookiePath' | 'cookieDomain'>): string | undefined {
  for (const [option, attempt] of [
    ['cookiePath', () => stringifySetCookie({ name: 'n', value: 'v', path: settings.cookiePath })],
    ['cookieDomain', () => stringifySetCookie({ name: 'n', value: 'v', domain: settings.cookieDomain ?? undefined })],
    ['cookieName', () => stringifySetCookie({ name: settings.cookieName, value: 'v' })],
  ] as const) {
    try {
      attempt();
    } catch (error) {
      return `${option}: ${(error as Error).message} (got ${JSON.stringify(settings[option])})`;
    }
  }
  return undefined;
}

/** The writable view of the settings a route holds inside withEdit(). */
export type EditableSettings = { -readonly [K in SettingName]: Settings[K] };

/**
 * `ctx.session.settings`: every setting readable by its option name, with the
 * session's own value where a configurable feature stores one.  Settings of an
 * enabled configurable feature change in edit mode: edit(), assign, save()
 * (validated, written with the request's commit) or discard(); withEdit(fn)
 * does all of it.  Edits not saved when the request ends are dropped.
 */
export class SessionSettings {
  readonly #context: SettingsHost;
  #draft: Partial<Record<SettingName, unknown>> | undefined;

  constructor(context: SettingsHost) {
    this.#context = context;
  }

  get editing(): boolean {
    return this.#draft !== undefined;
  }

  edit(): this {
    if (this.#draft) throw new SettingsError('settings are already in edit mode: save() or discard() first');
    this.#draft = {};
    return this;
  }

  discard(): void {
    this.#draft = undefined;
  }

  /** Validates the edited values against every rule and ceiling, then stores them in the session's row. */
  save(): void {
    const draft = this.#draft;
    if (!draft)
      throw new SettingsError('save() without edit(): call settings.edit() first, or use settings.withEdit()');
    const merged: Record<string, unknown> = {};
    for (const name of settingNames) merged[name] = name in draft ? draft[name] : this.#context.setting(name);
    const result = validate(merged);
    if (typeof result === 'string') throw new SettingsError(`invalid setting ${result}`);
    // What the schema lets through but the Set-Cookie serializer would refuse: refused here, or every later response
    // fails.
    const unwritableCookie = unwritable(result);
    if (unwritableCookie) throw new SettingsError(`invalid setting ${unwritableCookie}`);
    for (const [name, ceiling] of this.#context.ceilings) {
      const value = result[name] as number | null;
      if (ceiling !== null && (value === null || value > ceiling)) {
        throw new SettingsError(
          `invalid setting ${name}: at most ${ceiling} seconds (the max${name[0].toUpperCase()}${name.slice(1)} ` +
            `option)`,
        );
      }
    }
    this.#draft = undefined;
    this.#context.saveSettings(draft);
  }

  /** edit(), fn(settings), save(); discards the edit if fn or the validation throws. */
  withEdit(fn: (settings: EditableSettings) => void): void {
    this.edit();
    try {
      fn(this as unknown as EditableSettings);
      this.save();
    } catch (error) {
      this.discard();
      throw error;
    }
  }

  toJSON(): Settings {
    return Object.fromEntries(settingNames.map((name) => [name, (this as any)[name]])) as unknown as Settings;
  }

  static {
    for (const name of settingNames) {
      Object.defineProperty(this.prototype, name, {
        enumerable: true,
        get(this: SessionSettings) {
          const draft = this.#draft;
          return draft && name in draft ? draft[name] : this.#context.setting(name);
        },
        set(this: SessionSettings, value: unknown) {
          if (!this.#draft)
            throw new SettingsError(
              `settings are read-only here: change ${name} inside settings.withEdit(s => { s.${name} = ... })`,
            );
          this.#context.assertConfigurable(name);
          this.#draft[name] = value;
        },
      });
    }
  }
}

export interface SessionSettings extends Settings {}

/** What the settings view needs from the request's session lifecycle. */
export interface SettingsHost {
  setting(name: SettingName): unknown;
  readonly ceilings: ReadonlyMap<SettingName, number | null>;
  assertConfigurable(name: SettingName): void;
  saveSettings(values: Partial<Record<SettingName, unknown>>): void;
}
