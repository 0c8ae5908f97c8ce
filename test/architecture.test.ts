import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';

/**
 * `npm test` runs dependency-cruiser over src/ (.dependency-cruiser.cjs). These
 * tests prove the rules bite: a copy of src/ given one forbidden import, a
 * type-only one included, fails the check with the rule's name.
 */
const root = resolve(import.meta.dirname, '..');
const bin = join(root, 'node_modules', '.bin', 'depcruise');
const config = join(root, '.dependency-cruiser.cjs');
const copies: string[] = [];

async function check(edit?: { file: string; line: string }): Promise<{ code: number; output: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'kms-imports-'));
  copies.push(dir);
  cpSync(join(root, 'src'), join(dir, 'src'), { recursive: true });
  if (edit) {
    const path = join(dir, 'src', edit.file);
    writeFileSync(path, `${edit.line}\n${readFileSync(path, 'utf8')}`);
  }
  try {
    const { stdout } = await promisify(execFile)(bin, ['--config', config, '--output-type', 'err', 'src'], {
      cwd: dir,
    });
    return { code: 0, output: stdout };
  } catch (error) {
    const failed = error as { code: number; stdout: string };
    return { code: failed.code, output: failed.stdout };
  }
}

afterAll(() => {
  for (const dir of copies) rmSync(dir, { recursive: true, force: true });
});

describe('import rules of src/', () => {
  test('src/ as it is passes', async () => {
    const { code, output } = await check();
    expect(output).toContain('no dependency violations found');
    expect(code).toBe(0);
  });

  test.each([
    [
      'a feature naming the lifecycle, by a type-only import',
      'features/idle.ts',
      "import type { SessionContext } from '../context.js';",
      ['features-see-the-port', 'no-circular'],
    ],
    [
      'the lifecycle naming the middleware',
      'context.ts',
      "import type { SessionMiddleware } from './middleware.js';",
      ['context-is-wired-from-above', 'no-circular'],
    ],
    [
      'types.ts importing the package',
      'types.ts',
      "import type { Session } from './session.js';",
      ['types-at-the-bottom', 'no-circular'],
    ],
    [
      'gc naming a feature module instead of the catalogue',
      'gc.ts',
      "import { idleFeature } from './features/idle.js';",
      ['feature-modules-through-the-catalogue'],
    ],
  ])('%s fails the check', async (_, file, line, rules) => {
    const { code, output } = await check({ file, line });
    expect(code).toBeGreaterThan(0);
    for (const rule of rules) expect(output).toContain(`error ${rule}:`);
  });
});
