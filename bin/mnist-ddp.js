#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm install` (the "prepare" script) or `npm run build`.
import('../dist/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli.js')) {
    console.error('mnist-ddp: dist/ is missing; run `npm run build` first.');
    process.exit(2);
  }
  throw err;
});
