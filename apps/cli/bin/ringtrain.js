#!/usr/bin/env node
// The `ringtrain` command. A committed file (not dist/), so that npm links it during `npm ci`,
// before the build that `prepare` runs has produced dist/.
await import('../dist/main.js');
