import { Migration } from '@mikro-orm/migrations';

export class Migration20261122085640 extends Migration {
  override name = 'Migration20261122085640';

  override up(): void | Promise<void> {
    this.addSql(
      `create table "example_order" ("id" serial primary key, "userid" int not null, "items" jsonb not null, "total" int not null, "created" int not null);`,
    );
    this.addSql(`create index "example_order_userid_index" on "example_order" ("userid");`);

    this.addSql(
      `create table "example_session" ("id" varchar(64) not null, "created" bigint not null, "version" int not null, "data" jsonb not null, "flash" jsonb not null, "userid" int null, "csrf_token" varchar(43) null, "idle_expire" bigint null, "idle_timeout" int null, "extension_delay" smallint null, "extension_chance" smallint null, "extension_deadline" smallint null, "absolute_expire" bigint null, primary key ("id"));`,
    );
    this.addSql(`create index "example_session_userid_index" on "example_session" ("userid");`);
    this.addSql(`create index "example_session_idle_expire_index" on "example_session" ("idle_expire");`);
    this.addSql(`create index "example_session_absolute_expire_index" on "example_session" ("absolute_expire");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "example_order" cascade;`);
    this.addSql(`drop table if exists "example_session" cascade;`);
  }
}
