import { bodyParser } from '@koa/bodyparser';
import type { MikroORM } from '@mikro-orm/core';
import Koa, { type Context, type Middleware } from 'koa';
import { csrfProtection, session, SettingsError } from 'koa-mikro-session';
import { Order, Session } from './entities.ts';
import { html, type Html } from './html.ts';

/**
 * The example app: a small shop that shows every feature of koa-mikro-session
 * in a browser.  Log in and out (user id, id regeneration at login), a cart
 * kept in the session, flash messages after redirects, CSRF-protected forms,
 * "your active sessions" with "log out everywhere", and a settings page that
 * gives this session its own idle timeout.
 */

export interface ExampleOptions {
  orm: MikroORM;
  /** One key, or several for rotation (the first encrypts). */
  secret: string | string[];
}

interface User {
  id: number;
  name: string;
  displayName: string;
}

/** The demo's users; every password is "demo". */
export const USERS: readonly User[] = [
  { id: 1, name: 'alice', displayName: 'Alice' },
  { id: 2, name: 'bob', displayName: 'Bob' },
];
const PASSWORD = 'demo';

interface Product {
  sku: string;
  name: string;
  price: number; // cents
}

const PRODUCTS: readonly Product[] = [
  { sku: 'mug', name: 'Koa mug', price: 1200 },
  { sku: 'shirt', name: 'MikroORM T-shirt', price: 2500 },
  { sku: 'stickers', name: 'Sticker pack', price: 400 },
];

interface CartLine {
  sku: string;
  qty: number;
}

interface Flash {
  kind: 'info' | 'success' | 'error';
  text: string;
}

/** Idle timeouts the settings page offers; the global one is 30 minutes. */
const IDLE_CHOICES: readonly { seconds: number; label: string }[] = [
  { seconds: 5 * 60, label: '5 minutes' },
  { seconds: 30 * 60, label: '30 minutes (the default)' },
  { seconds: 8 * 3600, label: '8 hours' },
  { seconds: 7 * 24 * 3600, label: '7 days ("remember me")' },
];

export function createApp({ orm, secret }: ExampleOptions): Koa {
  const app = new Koa();

  // Errors first, so that they pass through session() and roll the request back.
  app.use(errorPages);
  app.use(
    session({
      orm,
      entity: Session,
      secret,
      idleTimeout: 30 * 60,
      maxIdleTimeout: 7 * 24 * 3600,
      absoluteTimeout: 7 * 24 * 3600,
    }),
  );
  app.use(bodyParser({ enableTypes: ['form'] }));
  app.use(csrfProtection());

  const routes: Record<string, Middleware> = {
    'GET /': shop,
    'POST /cart/add': addToCart,
    'POST /cart/remove': removeFromCart,
    'POST /checkout': checkout,
    'GET /login': loginPage,
    'POST /login': login,
    'POST /logout': logout,
    'GET /sessions': sessionsPage,
    'POST /sessions/revoke': revokeSessions,
    'GET /settings': settingsPage,
    'POST /settings': saveSettings,
    'POST /regenerate': regenerate,
  };
  app.use(async (ctx, next) => {
    const route = routes[`${ctx.method} ${ctx.path}`];
    if (route) return route(ctx, next);
    ctx.throw(404, `No page at ${ctx.path}`);
  });
  return app;
}

// --- Routes ---------------------------------------------------------------------------------

async function shop(ctx: Context): Promise<void> {
  const cart = cartOf(ctx);
  const user = currentUser(ctx);
  const orders = user ? await ctx.em.find(Order, { userid: user.id }, { orderBy: { id: 'desc' }, limit: 5 }) : [];
  const total = cart.reduce((sum, line) => sum + (product(line.sku)?.price ?? 0) * line.qty, 0);
  render(
    ctx,
    'Shop',
    html`
      <h1>Shop</h1>
      <div class="grid">
        <section>
          <h2>Products</h2>
          <ul class="products">
            ${PRODUCTS.map(
              (p) =>
                html` <li>
                  <span>${p.name} <small>${money(p.price)}</small></span>
                  <form method="post" action="/cart/add">
                    ${csrfField(ctx)}
                    <input type="hidden" name="sku" value="${p.sku}" />
                    <button type="submit" data-add="${p.sku}">Add to cart</button>
                  </form>
                </li>`,
            )}
          </ul>
        </section>
        <section>
          <h2>Your cart</h2>
          ${
            cart.length === 0
              ? html`<p class="muted" id="cart-empty">The cart is empty.</p>`
              : html` <table id="cart">
                    ${cart.map(
                      (line) =>
                        html` <tr>
                          <td>${line.qty} × ${product(line.sku)?.name ?? line.sku}</td>
                          <td class="num">${money((product(line.sku)?.price ?? 0) * line.qty)}</td>
                          <td>
                            <form method="post" action="/cart/remove">
                              ${csrfField(ctx)}
                              <input type="hidden" name="sku" value="${line.sku}" />
                              <button type="submit" class="link">remove</button>
                            </form>
                          </td>
                        </tr>`,
                    )}
                    <tr class="total">
                      <td>Total</td>
                      <td class="num">${money(total)}</td>
                      <td></td>
                    </tr>
                  </table>
                  <form method="post" action="/checkout">
                    ${csrfField(ctx)}
                    <button type="submit">${user ? 'Check out' : 'Log in to check out'}</button>
                  </form>`
          }
          <p class="muted">The cart lives in the session row, not in the cookie.</p>
        </section>
      </div>
      ${
        user && orders.length > 0
          ? html` <section>
              <h2>Your last orders</h2>
              <p class="muted">Each order row was written in the same commit as the session that emptied the cart.</p>
              <ul>
                ${orders.map((o) => html`<li>#${o.id}: ${o.items.map((i) => `${i.qty} × ${product(i.sku)?.name ?? i.sku}`).join(', ')} — ${money(o.total)} <small class="muted">${time(o.created)}</small></li>`)}
              </ul>
            </section>`
          : ''
      }
    `,
  );
}

function addToCart(ctx: Context): void {
  const item = product(field(ctx, 'sku'));
  if (!item) ctx.throw(400, 'Unknown product');
  const cart = cartOf(ctx);
  const line = cart.find((l) => l.sku === item.sku);
  if (line) line.qty += 1;
  else cart.push({ sku: item.sku, qty: 1 });
  ctx.session.set('cart', cart);
  flash(ctx, 'success', `Added ${item.name} to your cart.`);
  seeOther(ctx, '/');
}

function removeFromCart(ctx: Context): void {
  const sku = field(ctx, 'sku');
  ctx.session.set(
    'cart',
    cartOf(ctx).filter((l) => l.sku !== sku),
  );
  flash(ctx, 'info', `Removed ${product(sku)?.name ?? sku} from your cart.`);
  seeOther(ctx, '/');
}

function checkout(ctx: Context): void {
  const user = currentUser(ctx);
  if (!user) {
    flash(ctx, 'info', 'Log in to check out; your cart stays as it is.');
    return seeOther(ctx, '/login?next=/');
  }
  const cart = cartOf(ctx);
  if (cart.length === 0) {
    flash(ctx, 'error', 'Your cart is empty.');
    return seeOther(ctx, '/');
  }
  const total = cart.reduce((sum, line) => sum + (product(line.sku)?.price ?? 0) * line.qty, 0);
  // The order and the emptied cart are written by the same commit, at the end of the request.
  ctx.em.create(Order, { userid: user.id, items: cart, total, created: Math.floor(Date.now() / 1000) });
  ctx.session.delete('cart');
  flash(ctx, 'success', `Thank you, ${user.displayName}: your order of ${money(total)} is placed.`);
  seeOther(ctx, '/');
}

function loginPage(ctx: Context): void {
  const next = safeNext(ctx.query.next);
  render(
    ctx,
    'Log in',
    html`
      <h1>Log in</h1>
      <form method="post" action="/login" class="card narrow">
        ${csrfField(ctx)}
        <input type="hidden" name="next" value="${next}" />
        <label
          >User
          <select name="username">
            ${USERS.map((u) => html`<option value="${u.name}">${u.displayName}</option>`)}
          </select>
        </label>
        <label>Password <input type="password" name="password" autocomplete="current-password" required /></label>
        <button type="submit">Log in</button>
        <p class="muted">
          Demo users: ${USERS.map((u) => u.name).join(', ')}; the password is "${PASSWORD}". Logging in gives this
          session a new id and cookie (no session fixation); the cart is kept.
        </p>
      </form>
    `,
  );
}

function login(ctx: Context): void {
  const user = USERS.find((u) => u.name === field(ctx, 'username'));
  if (!user || field(ctx, 'password') !== PASSWORD) {
    flash(ctx, 'error', 'Wrong user name or password.');
    return seeOther(ctx, '/login');
  }
  ctx.session.userid = user.id; // regenerates the session id before storing the user
  flash(ctx, 'success', `Welcome, ${user.displayName}. You are logged in.`);
  seeOther(ctx, safeNext(field(ctx, 'next')));
}

function logout(ctx: Context): void {
  ctx.session.invalidate(); // deletes the row and removes the cookie
  flash(ctx, 'info', 'You are logged out.'); // new data: a new session carries the message
  seeOther(ctx, '/');
}

async function sessionsPage(ctx: Context): Promise<void> {
  const user = currentUser(ctx);
  if (!user) return requireLogin(ctx, '/sessions');
  const sessions = await ctx.session.listUserSessions();
  render(
    ctx,
    'Your sessions',
    html`
      <h1>Your active sessions</h1>
      <p class="muted">
        Every browser where ${user.displayName} is logged in is a row of the session table. Deleting the row logs that
        browser out at once.
      </p>
      <table id="sessions">
        <thead>
          <tr>
            <th>Session</th>
            <th>Started</th>
            <th>Last activity</th>
            <th>Expires</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          ${sessions.map(
            (s) =>
              html` <tr class="${s.id === ctx.session.id ? 'current' : ''}">
                <td><code title="${s.id}">${s.id.slice(0, 12)}…</code></td>
                <td>${time(s.created)}</td>
                <td>${s.lastActivity === null ? '—' : time(s.lastActivity)}</td>
                <td>${s.expiresAt === null ? 'never' : time(s.expiresAt)}</td>
                <td>${s.id === ctx.session.id ? html`<strong>this browser</strong>` : ''}</td>
              </tr>`,
          )}
        </tbody>
      </table>
      <div class="actions">
        <form method="post" action="/sessions/revoke">
          ${csrfField(ctx)}
          <input type="hidden" name="scope" value="others" />
          <button type="submit">Log out all other sessions</button>
        </form>
        <form method="post" action="/sessions/revoke">
          ${csrfField(ctx)}
          <input type="hidden" name="scope" value="all" />
          <button type="submit" class="danger" id="logout-everywhere">Log out everywhere</button>
        </form>
      </div>
    `,
  );
}

async function revokeSessions(ctx: Context): Promise<void> {
  if (!currentUser(ctx)) return requireLogin(ctx, '/sessions');
  if (field(ctx, 'scope') === 'others') {
    const count = await ctx.session.revokeUserSessions({ keepCurrent: true });
    flash(ctx, 'success', `Logged out ${count} other session${count === 1 ? '' : 's'}.`);
    return seeOther(ctx, '/sessions');
  }
  const count = await ctx.session.revokeUserSessions(); // this one too
  flash(ctx, 'success', `Logged out everywhere (${count} session${count === 1 ? '' : 's'}).`);
  seeOther(ctx, '/');
}

function settingsPage(ctx: Context): void {
  const current = ctx.session.settings.idleTimeout;
  const expires = ctx.session.expiresAt;
  render(
    ctx,
    'Settings',
    html`
      <h1>Session settings</h1>
      <form method="post" action="/settings" class="card narrow">
        ${csrfField(ctx)}
        <label
          >Log this browser out after being idle for
          <select name="idleTimeout">
            ${IDLE_CHOICES.map((c) => html`<option value="${c.seconds}" ${c.seconds === current ? 'selected' : ''}>${c.label}</option>`)}
          </select>
        </label>
        <button type="submit">Save</button>
        <p class="muted">
          This changes only this session, through
          <code>ctx.session.settings.withEdit(s =&gt; { s.idleTimeout = … })</code>: the value is a column of its row.
          Current idle timeout: <strong id="idle-timeout">${duration(current)}</strong>.
          ${expires ? html`This session expires at <strong>${expires.toISOString().replace('T', ' ').slice(0, 19)} UTC</strong> unless you use it.` : 'Nothing is stored yet, so nothing expires.'}
        </p>
      </form>

      <h2>Session id</h2>
      <form method="post" action="/regenerate" class="card narrow">
        ${csrfField(ctx)}
        <p>
          This session's id is
          <code>${ctx.session.isNew ? '(not stored yet)' : `${ctx.session.id.slice(0, 12)}…`}</code>. A new id keeps the
          data; the old cookie stops working.
        </p>
        <button type="submit">Give this session a new id</button>
      </form>

      <h2>CSRF protection</h2>
      <div class="card narrow">
        <p>
          Every form of this site carries a hidden <code>_csrf</code> field. This one does not, as a forged form on
          another site would not: the server answers <strong>403</strong> and changes nothing.
        </p>
        <form method="post" action="/cart/add">
          <input type="hidden" name="sku" value="mug" />
          <button type="submit" class="danger" id="forged">Send a form without the token</button>
        </form>
      </div>
    `,
  );
}

function saveSettings(ctx: Context): void {
  const seconds = Number(field(ctx, 'idleTimeout'));
  const choice = IDLE_CHOICES.find((c) => c.seconds === seconds);
  if (!choice) ctx.throw(400, 'Unknown idle timeout');
  try {
    ctx.session.settings.withEdit((s) => {
      s.idleTimeout = choice.seconds;
    });
    flash(ctx, 'success', `This session now expires after ${choice.label.replace(/ \(.*\)$/, '')} without activity.`);
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error;
    flash(ctx, 'error', error.message);
  }
  seeOther(ctx, '/settings');
}

function regenerate(ctx: Context): void {
  ctx.session.regenerate();
  flash(ctx, 'success', 'This session has a new id; its data is kept.');
  seeOther(ctx, '/settings');
}

// --- Helpers --------------------------------------------------------------------------------

function cartOf(ctx: Context): CartLine[] {
  return (ctx.session.get('cart') as CartLine[] | undefined) ?? [];
}

function currentUser(ctx: Context): User | undefined {
  const id = ctx.session.userid;
  return id === null ? undefined : USERS.find((u) => u.id === id);
}

function product(sku: string): Product | undefined {
  return PRODUCTS.find((p) => p.sku === sku);
}

function field(ctx: Context, name: string): string {
  const value = (ctx.request.body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

function flash(ctx: Context, kind: Flash['kind'], text: string): void {
  ctx.session.flash({ kind, text } satisfies Flash);
}

/** POST → 303 See Other → GET: reloading the page does not send the form again. */
function seeOther(ctx: Context, url: string): void {
  ctx.status = 303;
  ctx.redirect(url);
}

function requireLogin(ctx: Context, next: string): void {
  flash(ctx, 'info', 'Log in first.');
  seeOther(ctx, `/login?next=${encodeURIComponent(next)}`);
}

/** Only local paths: a login form must not redirect to another site. */
function safeNext(value: unknown): string {
  return typeof value === 'string' && /^\/(?![/\\])/.test(value) ? value : '/';
}

function csrfField(ctx: Context): Html {
  return html`<input type="hidden" name="_csrf" value="${ctx.session.getCsrfToken()}" />`;
}

function money(cents: number): string {
  return `€${(cents / 100).toFixed(2)}`;
}

function time(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
}

function duration(seconds: number | null): string {
  if (seconds === null) return 'none';
  const choice = IDLE_CHOICES.find((c) => c.seconds === seconds);
  return choice ? choice.label.replace(/ \(.*\)$/, '') : `${seconds} seconds`;
}

// --- Pages ----------------------------------------------------------------------------------

function render(ctx: Context, title: string, body: Html): void {
  const user = currentUser(ctx);
  const messages = ctx.session.popFlash() as Flash[];
  const items = cartOf(ctx).reduce((n, line) => n + line.qty, 0);
  ctx.type = 'html';
  ctx.body = page(
    title,
    html`
      <nav>
        <a href="/" class="brand">koa-mikro-session demo</a>
        <a href="/">Shop${items ? html` <span class="badge" id="cart-count">${items}</span>` : ''}</a>
        <a href="/sessions">Sessions</a>
        <a href="/settings">Settings</a>
        <span class="spacer"></span>
        ${
          user
            ? html`<span id="user">${user.displayName}</span>
                <form method="post" action="/logout" class="inline">
                  ${csrfField(ctx)}<button type="submit" class="link">Log out</button>
                </form>`
            : html`<a href="/login">Log in</a>`
        }
      </nav>
      <main>${messages.map((m) => html`<p class="flash ${m.kind}" role="status">${m.text}</p>`)} ${body}</main>
    `,
  ).value;
}

/** Errors become pages; Koa's own status and message for the ones it exposes (403 from csrfProtection, 409, 404). */
const errorPages: Middleware = async (ctx, next) => {
  try {
    await next();
  } catch (error) {
    const err = error as { status?: number; expose?: boolean; message?: string };
    const status = typeof err.status === 'number' && err.status >= 400 && err.status < 600 ? err.status : 500;
    ctx.status = status;
    ctx.type = 'html';
    const text = err.expose ? (err.message ?? '') : 'Something went wrong.';
    const hint =
      status === 409 ? 'Another request changed this session at the same time; nothing was saved. Try again.' : '';
    ctx.body = page(
      `Error ${status}`,
      html`
        <nav><a href="/" class="brand">koa-mikro-session demo</a></nav>
        <main>
          <h1>Error ${status}</h1>
          <p class="flash error" id="error">${text}</p>
          ${hint ? html`<p>${hint}</p>` : ''}
          <p><a href="/">Back to the shop</a></p>
        </main>
      `,
    ).value;
    if (status >= 500) ctx.app.emit('error', error, ctx);
  }
};

function page(title: string, body: Html): Html {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · koa-mikro-session</title>
        <style>
          ${STYLE}
        </style>
      </head>
      <body>
        ${body}
      </body>
    </html>`;
}

const STYLE = html`
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #3b5bdb; --bg: #f7f8fa; } * { box-sizing:
  border-box; } body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); } nav {
  display: flex; gap: 1.2rem; align-items: center; padding: .8rem 1.5rem; background: #fff; border-bottom: 1px solid
  var(--line); } nav a { color: var(--fg); text-decoration: none; } nav a:hover { color: var(--accent); } nav .brand {
  font-weight: 700; } nav .spacer { flex: 1; } main { max-width: 60rem; margin: 0 auto; padding: 1.5rem; } h1 {
  margin-top: 0; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 2rem; } @media (max-width: 40rem) { .grid
  { grid-template-columns: 1fr; } } section, .card { background: #fff; border: 1px solid var(--line); border-radius:
  8px; padding: 1rem 1.2rem; margin-bottom: 1rem; } .narrow { max-width: 34rem; } .products { list-style: none; padding:
  0; margin: 0; } .products li { display: flex; justify-content: space-between; align-items: center; padding: .4rem 0;
  border-bottom: 1px solid var(--line); } .products li:last-child { border-bottom: 0; } table { width: 100%;
  border-collapse: collapse; margin-bottom: 1rem; } th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px
  solid var(--line); } td.num { text-align: right; } tr.total td { font-weight: 700; border-bottom: 0; } tr.current {
  background: #edf2ff; } label { display: block; margin-bottom: .8rem; } select, input { display: block; margin-top:
  .3rem; padding: .4rem; font: inherit; min-width: 14rem; } button { font: inherit; padding: .4rem .9rem; border: 1px
  solid var(--accent); background: var(--accent); color: #fff; border-radius: 6px; cursor: pointer; } button.link {
  background: none; border: 0; color: var(--accent); padding: 0; } button.danger { background: #c92a2a; border-color:
  #c92a2a; } form.inline { display: inline; } .actions { display: flex; gap: 1rem; } .badge { background: var(--accent);
  color: #fff; border-radius: 999px; padding: 0 .5rem; font-size: .8rem; } .muted, small { color: var(--muted); } .flash
  { padding: .6rem 1rem; border-radius: 6px; border: 1px solid; } .flash.success { background: #ebfbee; border-color:
  #b2f2bb; } .flash.info { background: #e7f5ff; border-color: #a5d8ff; } .flash.error { background: #fff5f5;
  border-color: #ffc9c9; } code { background: #f1f3f5; padding: 0 .3rem; border-radius: 4px; }
`;
