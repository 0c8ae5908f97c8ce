import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

/**
 * The example app (`npm start`) driven in a real browser: Debian's chromium
 * through playwright-core.  Without /usr/bin/chromium the test is skipped with
 * a printed reason, and fails under CI=true (.ci/run installs the package).
 */
const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(import.meta.dirname, '..');
const ARTIFACTS = join(ROOT, 'test', 'artifacts');

const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} not found (apt-get install -y chromium)`;
if (missing && process.env.CI === 'true') throw new Error(`e2e: ${missing} (CI=true: the browser test must run)`);
if (missing) console.warn(`[koa-mikro-session tests] skipping the browser test: ${missing}`);

describe.skipIf(missing !== undefined)('the example app in chromium', () => {
  let dir: string;
  let server: ChildProcess | undefined;
  let output = '';
  let base: string;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist', 'index.js')))
      throw new Error('dist/ is missing: run npm run build (npm test does) before the browser test');
    dir = await mkdtemp(join(tmpdir(), 'kms-e2e-'));
    base = await startExample(dir);
    context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
  });

  afterAll(async () => {
    await context?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server!.once('exit', resolve));
      server.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      if (server.exitCode === null) server.kill('SIGKILL');
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** `node example/server.ts` on a free port of 127.0.0.1, with its own SQLite file: resolves to its URL. */
  async function startExample(tmp: string): Promise<string> {
    const node = existsSync(join(ROOT, 'node_modules', '.bin', 'node'))
      ? join(ROOT, 'node_modules', '.bin', 'node')
      : process.execPath;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      SQLITE_FILE: join(tmp, 'example.sqlite'),
      SESSION_SECRET: randomBytes(32).toString('base64url'),
    };
    delete env.DATABASE_URL;
    server = spawn(node, ['example/server.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the example did not start within 30s:\n${output}`)), 30_000);
      const read = (chunk: Buffer) => {
        output += chunk.toString();
        const match = /listening on (http:\/\/\S+?)\/? /.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      };
      server!.stdout!.on('data', read);
      server!.stderr!.on('data', read);
      server!.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the example exited with ${code}:\n${output}`));
      });
    });
  }

  async function flashes(): Promise<string[]> {
    return page.locator('.flash').allTextContents();
  }

  async function sessionCookie() {
    const cookies = await context.cookies(base);
    const found = cookies.filter((c) => c.name === 'session');
    expect(found).toHaveLength(1);
    return found[0];
  }

  test('log in, cart, flash, cookie, settings, CSRF, sessions, log out everywhere', async () => {
    // An anonymous visitor fills a cart: POST → 303 → GET shows the flash, once.
    await page.goto(`${base}/`);
    await expect.poll(() => page.title()).toContain('Shop');
    await page.click('button[data-add="mug"]');
    expect(await flashes()).toEqual(['Added Koa mug to your cart.']);
    await page.click('button[data-add="stickers"]');
    await page.click('button[data-add="mug"]');
    expect(await page.locator('#cart-count').textContent()).toBe('3');
    expect(await page.locator('#cart').textContent()).toContain('2 × Koa mug');
    await page.goto(`${base}/`);
    expect(await flashes()).toEqual([]); // popped by the previous page
    const anonymous = (await sessionCookie()).value;

    // Logging in regenerates the session id (a new cookie) and keeps the cart.
    await page.goto(`${base}/login`);
    await page.selectOption('select[name="username"]', 'alice');
    await page.fill('input[name="password"]', 'demo');
    await page.click('form[action="/login"] button[type="submit"]');
    expect(await flashes()).toEqual(['Welcome, Alice. You are logged in.']);
    expect(await page.locator('#user').textContent()).toBe('Alice');
    expect(await page.locator('#cart').textContent()).toContain('1 × Sticker pack');

    // The cookie jar: HttpOnly, SameSite=Lax, and nothing readable in the value.
    const cookie = await sessionCookie();
    expect(cookie.value).not.toBe(anonymous);
    expect(cookie.httpOnly).toBe(true);
    expect(cookie.sameSite).toBe('Lax');
    // Only base64url characters: no JSON, no URL-encoded text, no separators.
    expect(cookie.value).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(cookie.value.length).toBeLessThan(120); // a token, not data
    // Decoded, it is ciphertext: none of the session's words, in plain text or base64url.
    const decoded = Buffer.from(cookie.value, 'base64url').toString('latin1');
    // (Words of five letters or more in the base64url text: shorter ones occur in random text too often.)
    for (const word of ['alice', 'Alice', 'mug', 'stickers', 'cart', 'userid', 'qty'])
      expect(decoded).not.toContain(word);
    for (const word of ['alice', 'Alice', 'stickers', 'userid'])
      expect(cookie.value.toLowerCase()).not.toContain(word.toLowerCase());
    expect(() => JSON.parse(decoded)).toThrow();
    expect(await page.evaluate(() => document.cookie)).toBe(''); // scripts can't read it

    // Checking out writes an order row and empties the cart in one commit.
    await page.click('form[action="/checkout"] button');
    expect((await flashes())[0]).toMatch(/^Thank you, Alice: your order of €28\.00 is placed\.$/);
    expect(await page.locator('#cart-empty').count()).toBe(1);

    // A per-session idle timeout through settings.withEdit().
    await page.goto(`${base}/settings`);
    expect(await page.locator('#idle-timeout').textContent()).toBe('30 minutes');
    await page.selectOption('select[name="idleTimeout"]', String(8 * 3600));
    await page.click('form[action="/settings"] button');
    expect(await flashes()).toEqual(['This session now expires after 8 hours without activity.']);
    expect(await page.locator('#idle-timeout').textContent()).toBe('8 hours');

    // A form without the CSRF token is refused before any route runs.
    const forged = page.waitForResponse((response) => response.url().endsWith('/cart/add'));
    await page.click('#forged');
    expect((await forged).status()).toBe(403);
    expect(await page.locator('#error').textContent()).toContain('CSRF');
    await page.goto(`${base}/`);
    expect(await page.locator('#cart-empty').count()).toBe(1); // nothing was added

    // Alice logs in from a second client too: the sessions page lists both.
    const other = await logInElsewhere('alice');
    await page.goto(`${base}/sessions`);
    expect(await page.locator('#sessions tbody tr').count()).toBe(2);
    expect(await page.locator('#sessions tr.current').count()).toBe(1);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'e2e-sessions.png'), fullPage: true });

    // Log out everywhere: both sessions are gone.
    await page.click('#logout-everywhere');
    expect(await flashes()).toEqual(['Logged out everywhere (2 sessions).']);
    expect(await page.locator('#user').count()).toBe(0);
    expect(await page.locator('nav a[href="/login"]').count()).toBe(1);
    const elsewhere = await fetch(`${base}/sessions`, { headers: { cookie: other }, redirect: 'manual' });
    expect(elsewhere.status).toBe(303);
    expect(elsewhere.headers.get('location')).toBe('/login?next=%2Fsessions');
    await page.goto(`${base}/sessions`);
    expect(page.url()).toBe(`${base}/login?next=%2Fsessions`);
    await page.screenshot({ path: join(ARTIFACTS, 'e2e-logged-out.png'), fullPage: true });
  });

  /** Logs `user` in with plain HTTP requests; returns that client's cookie header. */
  async function logInElsewhere(user: string): Promise<string> {
    const form = await fetch(`${base}/login`);
    const cookie = form.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    const token = /name="_csrf" value="([^"]+)"/.exec(await form.text())?.[1];
    expect(token).toBeDefined();
    const login = await fetch(`${base}/login`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: token!, username: user, password: 'demo', next: '/' }),
      redirect: 'manual',
    });
    expect(login.status).toBe(303);
    const session = login.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .find((c) => c.startsWith('session='));
    expect(session).toBeDefined();
    return session!;
  }
});
