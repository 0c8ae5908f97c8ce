import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import { Cookie, CookieJar } from 'tough-cookie';

/** A Koa app served on a loopback port for the duration of a test. */
export async function serve(app: Koa): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer(app.callback());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export interface Reply {
  status: number;
  text: string;
  json: any;
  headers: Headers;
  /** Parsed Set-Cookie headers of this response. */
  cookies: Cookie[];
}

/**
 * A browser-like client: a real cookie jar that can be saved and restored,
 * like a thief replaying a copied cookie.
 */
export class Client {
  jar = new CookieJar();

  constructor(readonly url: string) {}

  get(path: string, init: RequestInit = {}): Promise<Reply> {
    return this.request(path, init);
  }

  post(path: string, body?: unknown, init: RequestInit = {}): Promise<Reply> {
    return this.request(path, {
      method: 'POST',
      body: body === undefined ? undefined : JSON.stringify(body),
      ...init,
      headers: { 'content-type': 'application/json', ...init.headers },
    });
  }

  async request(path: string, init: RequestInit = {}): Promise<Reply> {
    const url = this.url + path;
    const cookie = await this.jar.getCookieString(url);
    const headers = new Headers(init.headers);
    if (cookie && !headers.has('cookie')) headers.set('cookie', cookie);
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    const cookies: Cookie[] = [];
    for (const header of response.headers.getSetCookie()) {
      cookies.push(Cookie.parse(header)!);
      await this.jar.setCookie(header, url);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, text, json, headers: response.headers, cookies };
  }

  /** The value of a cookie in the jar. */
  async cookie(name = 'session'): Promise<string | undefined> {
    const cookies = await this.jar.getCookies(this.url);
    return cookies.find((c) => c.key === name)?.value;
  }

  async setCookie(value: string, name = 'session'): Promise<void> {
    await this.jar.setCookie(`${name}=${value}; Path=/`, this.url);
  }

  snapshot(): () => void {
    const saved = this.jar.serializeSync()!;
    return () => {
      this.jar = CookieJar.deserializeSync(saved);
    };
  }
}
