import { Migration } from '@mikro-orm/migrations';

export class Migration20261122085637 extends Migration {
  override name = 'Migration20261122085637';

  override up(): void | Promise<void> {
    this.addSql(
      `create table \`example_order\` (\`id\` integer not null primary key autoincrement, \`userid\` integer not null, \`items\` json not null, \`total\` integer not null, \`created\` integer not null);`,
    );
    this.addSql(`create index \`example_order_userid_index\` on \`example_order\` (\`userid\`);`);

    this.addSql(
      `create table \`example_session\` (\`id\` text not null primary key, \`created\` bigint not null, \`version\` integer not null, \`data\` json not null, \`flash\` json not null, \`userid\` integer null, \`csrf_token\` text null, \`idle_expire\` bigint null, \`idle_timeout\` integer null, \`extension_delay\` integer null, \`extension_chance\` integer null, \`extension_deadline\` integer null, \`absolute_expire\` bigint null);`,
    );
    this.addSql(`create index \`example_session_userid_index\` on \`example_session\` (\`userid\`);`);
    this.addSql(`create index \`example_session_idle_expire_index\` on \`example_session\` (\`idle_expire\`);`);
    this.addSql(`create index \`example_session_absolute_expire_index\` on \`example_session\` (\`absolute_expire\`);`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists \`example_order\`;`);
    this.addSql(`drop table if exists \`example_session\`;`);
  }
}
