// The import rule of src/ (issue #12), checked by test/unit/dependency-rules.test.ts on every `npm test`:
//   cli.ts → commands → coordinator | worker → shared; serve/ and report/ → shared only;
//   coordinator/run.ts alone may also import report/ (it writes report.html at the end of a run);
//   no cycles anywhere in src/. Type-only imports count: they couple modules just the same.
// Each src folder's README.md says the same in words; change them together.

/** `to` paths outside `allowed` (folders under src/, plus the file's own folder). */
const outside = (...allowed) => ({ path: '^src/', pathNot: `^src/(${allowed.join('|')})/` });

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'An import cycle in src/: split the shared part into a module both sides import.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'shared-imports-only-shared',
      comment: 'shared/ is the bottom layer: it imports nothing from src/ outside shared/.',
      severity: 'error',
      from: { path: '^src/shared/' },
      to: outside('shared'),
    },
    {
      name: 'worker-imports-worker-or-shared',
      comment: 'The worker (data plane) never imports the coordinator, commands, serve/ or report/.',
      severity: 'error',
      from: { path: '^src/worker/' },
      to: outside('worker', 'shared'),
    },
    {
      name: 'coordinator-imports-coordinator-or-shared',
      comment: 'The coordinator (control plane) never imports the worker, commands, serve/ or report/.',
      severity: 'error',
      from: { path: '^src/coordinator/', pathNot: '^src/coordinator/run[.]ts$' },
      to: outside('coordinator', 'shared'),
    },
    {
      name: 'coordinator-run-may-write-the-report',
      comment: 'coordinator/run.ts may import report/ (report.html at the end of a run), and otherwise only what the coordinator may.',
      severity: 'error',
      from: { path: '^src/coordinator/run[.]ts$' },
      to: outside('coordinator', 'shared', 'report'),
    },
    {
      name: 'serve-imports-only-shared',
      comment: 'serve/ (the prediction server) imports only shared/.',
      severity: 'error',
      from: { path: '^src/serve/' },
      to: outside('serve', 'shared'),
    },
    {
      name: 'report-imports-only-shared',
      comment: 'report/ (report.html) imports only shared/.',
      severity: 'error',
      from: { path: '^src/report/' },
      to: outside('report', 'shared'),
    },
    {
      name: 'only-the-entry-point-imports-cli',
      comment: 'src/cli.ts is the entry point: nothing in src/ imports it.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^src/cli[.]ts$' },
    },
    {
      name: 'imports-resolve',
      comment: 'An import that does not resolve hides an edge from the rules above. serve/app.js runs in the browser and imports URL paths that serve/ answers.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/serve/app[.]js$' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    moduleSystems: ['es6', 'cjs'],
  },
};
