/**
 * The import rules of src/ (run by `npm test`). Type-only imports count: they
 * are how a reader navigates. The layering, bottom up: types, errors, random →
 * token, data, settings, codec → features/ → entity, set-cookie, statements,
 * merge → session, flush, gc → config → context → middleware → index.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import circle: no piece of it can be read, tested or taken out alone.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'types-at-the-bottom',
      comment: 'types.ts is what every module may import: it imports nothing of the package.',
      severity: 'error',
      from: { path: '^src/types\\.ts$' },
      to: { path: '^src/' },
    },
    {
      name: 'features-see-the-port',
      comment: 'A feature sees FeatureContext (features/feature.ts), never the lifecycle behind it.',
      severity: 'error',
      from: { path: '^src/features/' },
      to: {
        path: '^src/(context|session|middleware|config|entity|statements|flush|merge|gc|gc-schedule|cli|index|internals|connection-failures)\\.ts$',
      },
    },
    {
      name: 'context-is-wired-from-above',
      comment: 'The middleware wires SessionContext and Session together; the lifecycle names neither it nor Session.',
      severity: 'error',
      from: { path: '^src/context\\.ts$' },
      to: { path: '^src/(middleware|session)\\.ts$' },
    },
    {
      name: 'feature-modules-through-the-catalogue',
      comment:
        'Outside features/, only the public API delegates to a feature module (session.ts: csrf and userid accessors; ' +
        'config.ts: userid queries); everything else reads features through the port and the catalogue.',
      severity: 'error',
      from: { path: '^src/[^/]+\\.ts$', pathNot: '^src/(session|config)\\.ts$' },
      to: { path: '^src/features/', pathNot: '^src/features/(feature|index)\\.ts$' },
    },
  ],
  options: {
    // swc parses TypeScript without the compiler's API (TypeScript 7 has none yet), type-only imports included.
    parser: 'swc',
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
