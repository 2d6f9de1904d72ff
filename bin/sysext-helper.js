#!/usr/bin/env node
// The installed package's entry: the prebuilt bundle (dist/bundle), which needs no node_modules.
// In a checkout, ./bin/run.js runs the compiled sources instead.
await import('../dist/bundle/cli.js')
