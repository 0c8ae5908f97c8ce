import { z } from 'zod';
import { ConfigurationError } from './errors.js';

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

const seconds = (what: string) =>
  z.int(`${what} must be a whole number of seconds`).min(1, `${what} must be at least 1 second`).max(MAX_SECONDS, `${what} must be at most ${MAX_SECONDS} seconds`);

export const settingsSchema = z
  .object({
    /** Name of the cookie; a `__Host-` name requires Secure, Path=/ and no Domain. */
    cookieName: z.string().regex(TOKEN, 'cookieName must be an RFC 2616 token (letters, digits and !#$%&\'*+-.^_`|~)').max(255).default('session'),
    /** Max-Age of the cookie in seconds; null makes a browser-session cookie. */
    cookieMaxAge: seconds('cookieMaxAge').nullable().default(null),
    /** Path of the cookie. */
    cookiePath: z.string().startsWith('/', 'cookiePath must start with "/"').max(255, 'cookiePath must be at most 255 characters').regex(ATTRIBUTE, 'cookiePath may not contain ";" or control characters').default('/'),
    /** Domain of the cookie; null means the request's host only. */
    cookieDomain: z.string().min(1, 'cookieDomain must be non-empty or null').max(255, 'cookieDomain must be at most 255 characters').regex(ATTRIBUTE, 'cookieDomain may not contain ";" or control characters').nullable().default(null),
    /** Secure attribute; 'auto' follows ctx.secure (which honours app.proxy). */
    cookieSecure: z.union([z.boolean(), z.literal('auto')], 'cookieSecure must be true, false or "auto"').default(false),
    /** HttpOnly attribute: keeps the cookie away from scripts. */
    cookieHttpOnly: z.boolean('cookieHttpOnly must be a boolean').default(true),
    /** SameSite attribute; 'none' requires Secure; false omits the attribute. */
    cookieSameSite: z.union([z.enum(['lax', 'strict', 'none']), z.literal(false)], 'cookieSameSite must be "lax", "strict", "none" or false').default('lax'),
  })
  .superRefine((s, ctx) => {
    if (s.cookieSameSite === 'none' && s.cookieSecure === false) {
      ctx.addIssue({ code: 'custom', path: ['cookieSameSite'], message: 'cookieSameSite "none" requires cookieSecure: true (or "auto"): browsers reject SameSite=None without Secure' });
    }
    if (s.cookieName.startsWith('__Host-') && (s.cookieSecure === false || s.cookiePath !== '/' || s.cookieDomain !== null)) {
      ctx.addIssue({ code: 'custom', path: ['cookieName'], message: 'a "__Host-" cookieName requires cookieSecure: true (or "auto"), cookiePath "/" and cookieDomain null' });
    }
    if (s.cookieName.startsWith('__Secure-') && s.cookieSecure === false) {
      ctx.addIssue({ code: 'custom', path: ['cookieName'], message: 'a "__Secure-" cookieName requires cookieSecure: true (or "auto")' });
    }
  });

export type Settings = Readonly<z.output<typeof settingsSchema>>;
export type SettingsInput = z.input<typeof settingsSchema>;
export const settingNames = Object.keys(settingsSchema.shape) as (keyof Settings)[];

/** Validates the settings part of the options; throws a ConfigurationError naming the setting. */
export function resolveSettings(input: Record<string, unknown>): Settings {
  const picked: Record<string, unknown> = {};
  for (const name of settingNames) if (input[name] !== undefined) picked[name] = input[name];
  const result = settingsSchema.safeParse(picked);
  if (!result.success) throw new ConfigurationError(describeIssue(result.error.issues[0], picked));
  return Object.freeze(result.data);
}

function describeIssue(issue: z.core.$ZodIssue, input: Record<string, unknown>): string {
  const name = String(issue.path[0] ?? 'options');
  const got = name in input ? ` (got ${JSON.stringify(input[name]) ?? String(input[name])})` : '';
  const message = issue.message.startsWith(name) || issue.code === 'custom' ? issue.message : `${name}: ${issue.message}`;
  return `invalid option ${name}: ${message}${got}`;
}
