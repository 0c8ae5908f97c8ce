import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { vi } from 'vitest';
import { MikroORM as MariaDbORM } from '@mikro-orm/mariadb';
import { MikroORM as PostgreSqlORM } from '@mikro-orm/postgresql';
import type { MikroORM } from '@mikro-orm/core';
import { CLIENT_URLS } from './databases.js';

/**
 * A second connection to the test server, to see and end the app's own
 * connections as a failover or an administrator would.  Only the app's: on
 * PostgreSQL those of its database and application_name, on MariaDB those of
 * its database other than this one (the databases are shared with other runs).
 */
export class Backends {
  private constructor(
    readonly name: 'postgresql' | 'mariadb',
    private readonly orm: MikroORM,
  ) {}

  static async open(name: 'postgresql' | 'mariadb'): Promise<Backends> {
    const options = {
      clientUrl: CLIENT_URLS[name],
      entities: [],
      discovery: { warnWhenNoEntities: false },
      pool: { min: 0, max: 1 },
    };
    const orm = (
      name === 'postgresql' ? await PostgreSqlORM.init(options as any) : await MariaDbORM.init(options as any)
    ) as MikroORM;
    return new Backends(name, orm);
  }

  #execute<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.orm.em.getConnection().execute(sql, params, 'all') as Promise<T[]>;
  }

  /** The app's live connections to `app`'s database (`applicationName`: PostgreSQL's filter). */
  async count(app: MikroORM, applicationName?: string): Promise<number> {
    const database = app.config.get('dbName');
    if (this.name === 'postgresql') {
      const [row] = await this.#execute<{ n: number }>(
        'select count(*)::int as n from pg_stat_activity where datname = ? and application_name = ? and pid <> pg_backend_pid()',
        [database, applicationName],
      );
      return row.n;
    }
    const [row] = await this.#execute<{ n: number | string }>(
      'select count(*) as n from information_schema.processlist where db = ? and id <> connection_id()',
      [database],
    );
    return Number(row.n);
  }

  /**
   * Ends every connection the app has now, in the middle of whatever it does; returns how many.  With `exited`, returns
   * only once the server has closed them (the app may learn of it a moment later, as it would of a real failover);
   * that costs about 100 ms on PostgreSQL, which checks for the backend's exit at that interval.
   */
  async terminate(app: MikroORM, applicationName?: string, { exited = false } = {}): Promise<number> {
    const database = app.config.get('dbName');
    if (this.name === 'postgresql') {
      // With a timeout, pg_terminate_backend waits until the backend has exited (PostgreSQL 14+).
      const rows = await this.#execute<{ ended: boolean }>(
        'select pg_terminate_backend(pid, ?) as ended from pg_stat_activity where datname = ? and application_name = ? and pid <> pg_backend_pid()',
        [exited ? 5000 : 0, database, applicationName],
      );
      return rows.filter((row) => row.ended).length;
    }
    const rows = await this.#execute<{ id: number | string }>(
      'select id from information_schema.processlist where db = ? and id <> connection_id()',
      [database],
    );
    let ended = 0;
    for (const { id } of rows) {
      try {
        await this.#execute(`kill ${Number(id)}`);
        ended++;
      } catch {
        // gone already
      }
    }
    // KILL only flags the thread: wait until the server has let go of each.
    const ids = rows.map(({ id }) => Number(id));
    if (!exited || ids.length === 0) return ended;
    await vi.waitFor(
      async () => {
        const left = await this.#execute(
          `select id from information_schema.processlist where id in (${ids.map(() => '?').join(', ')})`,
          ids,
        );
        if (left.length > 0) throw new Error(`connections ${JSON.stringify(left)} still open after KILL`);
      },
      { timeout: 5000, interval: 10 },
    );
    return ended;
  }

  close(): Promise<void> {
    return this.orm.close(true);
  }
}

/**
 * A TCP proxy in front of the real server: the app connects through it, and
 * stop() makes the database unreachable as an outage would (the listener
 * closes, so new connections are refused, and every open connection is cut);
 * start() brings it back on the same port.
 */
export class TcpProxy {
  #server: Server | undefined;
  #sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  /** The server's URL with the proxy in place of the server. */
  static url(url: string, port: number): string {
    const proxied = new URL(url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(port);
    return proxied.toString();
  }

  static forUrl(url: string): TcpProxy {
    const { hostname, port } = new URL(url);
    return new TcpProxy({ host: hostname, port: Number(port) });
  }

  async start(): Promise<void> {
    if (this.#server) return;
    const server = createServer((client) => {
      const upstream = connect(this.target);
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket);
        socket.on('close', () => this.#sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }
}
