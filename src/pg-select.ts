/**
 * A named SELECT for pg that asks PostgreSQL for the result's description
 * (Describe) only the first time it runs on a connection.
 *
 * pg's own Query sends Describe on every execution, even of a named statement
 * the connection has prepared already, and rebuilds from the answer the
 * field list, a type parser per column and an empty row template
 * (Result.addFields(): it clones an object in V8's dictionary mode). For the
 * session's one-row SELECT that was about 29 k instructions of a 300 k
 * request (BENCHMARKS.md, "Issue 12, ninth step"). A prepared statement's
 * result shape cannot change while it exists (PostgreSQL refuses to run it
 * then: 0A000, which pg-statements.ts answers with a new name), so the shape
 * is kept per connection and statement name, and reused.
 *
 * It is a "submittable", pg's public extension point for query objects
 * (pg-cursor and pg-query-stream are built on it): pg calls submit() with the
 * connection when the query's turn comes, then the handle*() methods as the
 * server's messages arrive, and the callback pg-pool gives it. What it uses of
 * the connection is what pg-cursor uses (parse, bind, describe, execute, sync)
 * and pg's record of the statements prepared on it. Where any of that is not
 * as expected (another pg, a binary-mode client, pg-native's client, which
 * passes itself), submit() sets `refused` and answers a PgSelectUnsupported
 * error having sent nothing, and the caller goes back to pg's own Query for
 * good. pg-pool drops the client that answered the refusal, as after any
 * failed query: one reconnect per process.
 */

/**
 * What decoding a row needs: the columns' names, in order, and their type parsers, looked up when the
 * statement is described. pg's Query looks the parsers up on every run; looking up five of them costs
 * about 5 k instructions per request. A parser the app sets later applies on connections that describe
 * the statement later (new ones), not on those that already have.
 */
interface Shape {
  names: string[];
  parsers: Parser[];
}

type Parser = (value: string) => unknown;

interface PgConnection {
  parse(message: { text: string; name: string }): void;
  bind(message: { statement: string; values: unknown[] }): void;
  describe(message: { type: 'P'; name: string }): void;
  execute(message: { portal: string; rows: number }): void;
  sync(): void;
  parsedStatements: Record<string, string>;
  submittedNamedStatements: Record<string, string>;
  stream: { cork?: () => void; uncork?: () => void };
}

interface TypeParsers {
  getTypeParser(oid: number, format: 'text'): Parser;
}

/** The shapes seen per connection, by statement name; a connection is here once usable() accepted it. */
const shapes = new WeakMap<object, Map<string, Shape>>();

/** submit() found the connection or the client unlike what this module was written for: nothing was sent. */
export class PgSelectUnsupported extends Error {}

export interface PgSelectResult {
  rows: Record<string, unknown>[];
  rowCount: number;
}

export class PgSelect {
  /** pg records a statement by these when PostgreSQL confirms its Parse. */
  readonly name: string;
  readonly text: string;
  readonly values: string[];
  /** pg-pool's callback, set by the client (client.query(submittable, undefined, callback)). */
  callback: ((error: unknown, result?: PgSelectResult) => void) | undefined;
  /** The client sets `_types` here (its type parsers, MikroORM's among them), as for pg-cursor. */
  readonly _result: { _types?: TypeParsers } = {};
  /** Set by a binary-mode client: rows would arrive as bytes. */
  binary?: boolean;
  /** submit() refused to run (PgSelectUnsupported): nothing was sent. */
  refused = false;

  #connection: PgConnection | undefined;
  #shape: Shape | undefined;
  #rows: Record<string, unknown>[] = [];
  #error: unknown;

  constructor(name: string, text: string, values: string[]) {
    this.name = name;
    this.text = text;
    this.values = values;
  }

  submit(connection: PgConnection): Error | null {
    // A connection is checked once, when it is first seen; the client's settings reach each query.
    let known = shapes.get(connection);
    if (this.binary || !this._result._types || (!known && !usable(connection))) {
      this.refused = true;
      return new PgSelectUnsupported('pg is not as PgSelect expects: nothing was sent');
    }
    if (!known) shapes.set(connection, (known = new Map()));
    const prepared = connection.parsedStatements[this.name] ?? connection.submittedNamedStatements[this.name];
    if (prepared !== undefined && prepared !== this.text)
      return new Error(`pg statement ${this.name} was prepared for another text`);
    this.#connection = connection;
    // A statement parsed now is described now: its shape is the table's as it is now.
    this.#shape = prepared === undefined ? undefined : known.get(this.name);
    connection.stream.cork?.();
    try {
      if (prepared === undefined) {
        connection.parse({ text: this.text, name: this.name });
        connection.submittedNamedStatements[this.name] = this.text;
      }
      connection.bind({ statement: this.name, values: this.values });
      if (!this.#shape) connection.describe({ type: 'P', name: '' });
      connection.execute({ portal: '', rows: 0 });
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
    return null;
  }

  handleRowDescription(message: { fields: { name: string; dataTypeID: number }[] }): void {
    const types = this._result._types!;
    const shape: Shape = {
      names: message.fields.map((field) => field.name),
      parsers: message.fields.map((field) => types.getTypeParser(field.dataTypeID, 'text')),
    };
    this.#shape = shape;
    shapes.get(this.#connection!)?.set(this.name, shape);
  }

  handleDataRow(message: { fields: (string | null)[] }): void {
    const shape = this.#shape;
    const { fields } = message;
    // Defensive: PostgreSQL refuses to run a prepared statement whose result shape changed (0A000).
    if (!shape || fields.length !== shape.names.length) {
      this.#error ??= new Error(`pg statement ${this.name}: a row of ${fields.length} columns, not as described`);
      return;
    }
    const row: Record<string, unknown> = {};
    try {
      const { parsers } = shape;
      for (let i = 0; i < fields.length; i++) {
        const value = fields[i];
        row[shape.names[i]] = value === null ? null : parsers[i](value);
      }
    } catch (error) {
      // A type parser that throws fails this query, as with pg's Query, not pg's message handler.
      this.#error ??= error;
      return;
    }
    this.#rows.push(row);
  }

  handleCommandComplete(): void {}

  handleEmptyQuery(): void {}

  handlePortalSuspended(): void {}

  handleCopyInResponse(connection: { sendCopyFail(message: string): void }): void {
    connection.sendCopyFail('not a COPY');
  }

  handleCopyData(): void {}

  handleError(error: unknown): void {
    // Whatever failed, the next run on this connection asks for the shape again.
    if (this.#connection) shapes.get(this.#connection)?.delete(this.name);
    const callback = this.callback;
    this.callback = undefined;
    callback?.(error);
  }

  handleReadyForQuery(): void {
    if (this.#error) return this.handleError(this.#error);
    const callback = this.callback;
    this.callback = undefined;
    callback?.(null, { rows: this.#rows, rowCount: this.#rows.length });
  }
}

function usable(connection: Partial<PgConnection> | undefined): connection is PgConnection {
  return (
    typeof connection?.parse === 'function' &&
    typeof connection.bind === 'function' &&
    typeof connection.describe === 'function' &&
    typeof connection.execute === 'function' &&
    typeof connection.sync === 'function' &&
    typeof connection.parsedStatements === 'object' &&
    connection.parsedStatements !== null &&
    typeof connection.submittedNamedStatements === 'object' &&
    connection.submittedNamedStatements !== null &&
    typeof connection.stream === 'object'
  );
}
