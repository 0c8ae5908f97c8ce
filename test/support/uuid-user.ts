import { defineEntity, p } from '@mikro-orm/core';
import { Userid } from '../../src/index.js';

/**
 * The README's "a UUID user, loaded with the session": the app's User with a
 * UUID key in `tableName`, and a Userid subclass whose column is that UUID,
 * read a second time as the eagerly loaded User (a relation, so the session
 * row is loaded by findOne() rather than the prepared SELECT).
 */
export function uuidUser(tableName: string) {
  const User = defineEntity({
    name: 'User',
    tableName,
    properties: { id: p.uuid().primary(), name: p.string() },
  });
  class UuidUserid extends Userid {}
  defineEntity({
    class: UuidUserid,
    embeddable: true,
    properties: {
      userid: p.uuid().nullable().index(),
      user: () => p.manyToOne(User).name('userid').persist(false).nullable().eager(),
    },
  });
  return { User, UuidUserid };
}
