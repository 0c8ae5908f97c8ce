// The design floor (server-floor.mjs MODE=design, and a scenario of cpu.mjs):
// what this library's design cannot skip, and nothing else.
//   - The statements as the library sends them on PostgreSQL: pg named
//     statements over MikroORM's own pg pool (one SELECT to read or ignore,
//     SELECT + UPDATE to write, one INSERT for a new session), the SELECT
//     described once per connection (the library's PgSelect, pg-select.ts).
//   - The row as a managed entity of the request's fork: a loaded row made an
//     entity as findOne() makes one (the driver's mapResult(), then the entity
//     factory, which registers it; em.map() would merge it a second time), a
//     new one by em.create().  Its columns are plain data properties, as the
//     library makes them (entity.ts plainColumns()): MikroORM's per-instance
//     accessors for scalars are work the design does not need.
//   - For a new session: a random 128-bit token, its SHA-256 as the id, one
//     AES-256-GCM encryption of the token (under a KeyObject imported once: a
//     raw Buffer key costs ~15 µs more per cipher) and a Set-Cookie header.
//     A returning cookie costs a Map lookup, as with the library's cache of
//     decrypted cookies.
// No feature, check, event, snapshot diff or version guard: where the library
// costs more than this, the difference is the library's own.
import { createCipheriv, createHash, createSecretKey, hash, randomBytes } from 'node:crypto';
import { importLibraryModule } from './common.mjs';

const { PgSelect } = await importLibraryModule('pg-select.js');

/** A Koa middleware answering /ignore, /read, /write and /new; needs ctx.em, a fork of `orm.em`. */
export async function designFloor(orm, Session, table) {
  const pool = await orm.em.getConnection().getNativeClient();
  const select = { name: 'floor-select', text: `select * from ${table} where id = $1` };
  const selectRow = (id) => pool.query(new PgSelect(select.name, select.text, [id]));
  const update = { name: 'floor-update', text: `update ${table} set data = $1, version = version + 1 where id = $2` };
  const insert = {
    name: 'floor-insert',
    text: `insert into ${table} (id, created, version, data, flash) values ($1, $2, 1, $3, '{}')`,
  };
  const key = createSecretKey(randomBytes(32));
  const aad = Buffer.from('floor:session');
  const ids = new Map();
  const meta = orm.getMetadata().get(Session);
  // A writable value on the prototype shadows MikroORM's setter: an assignment makes an own data property.
  for (const prop of meta.props) {
    if (!prop.primary && prop.kind === 'scalar')
      Object.defineProperty(meta.prototype, prop.name, { value: undefined, writable: true, configurable: true });
  }
  const managed = (em, raw) =>
    em
      .getEntityFactory()
      .create(Session, em.getDriver().mapResult(raw, meta), { merge: true, refresh: true, convertCustomTypes: true });
  const encrypt = (token, iv) => {
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad);
    return Buffer.concat([iv, cipher.update(token), cipher.final(), cipher.getAuthTag()]).toString('base64url');
  };
  return async (ctx) => {
    ctx.body = 'ok';
    if (ctx.path === '/new') {
      const random = randomBytes(28); // token and IV in one draw
      const token = random.subarray(0, 16);
      const id = hash('sha256', token, 'hex');
      const row = ctx.em.create(Session, { id, created: Math.floor(Date.now() / 1000), data: { n: 1 }, flash: {} });
      await pool.query({ ...insert, values: [id, row.created, JSON.stringify(row.data)] });
      ctx.cookies.set('session', encrypt(token, random.subarray(16)), {
        httpOnly: true,
        sameSite: 'lax',
        signed: false,
      });
      return;
    }
    // The bench gives floors cookies that nothing decrypts; each names its own row.
    const cookie = ctx.cookies.get('session', { signed: false }) ?? '';
    let id = ids.get(cookie);
    if (id === undefined) ids.set(cookie, (id = createHash('sha256').update(cookie).digest('hex')));
    const { rows } = await selectRow(id);
    if (!rows[0]) {
      await pool.query({ ...insert, values: [id, 0, '{"n":1}'] });
      return;
    }
    const row = managed(ctx.em, rows[0]);
    if (ctx.path === '/read') ctx.body = String(row.data.n);
    if (ctx.path === '/write') {
      row.data = { n: row.data.n + 1 };
      await pool.query({ ...update, values: [JSON.stringify(row.data), id] });
    }
  };
}
