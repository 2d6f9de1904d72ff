#!/usr/bin/env node
/**
 * Entry point of the install service io.github.sysext_helper.Manager1
 * (started by D-Bus activation through systemd). Options: --test-mode
 * --address ADDR (private bus, no polkit, not as root), --idle-timeout S,
 * --cli PATH (the sysext-helper CLI entry; default cli.js next to this file),
 * --policy FILE (default /etc/sysext-helper/policy.conf).
 */
import {existsSync} from 'node:fs'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import {runServiceMain} from './bus-service.js'
import {runManager} from './manager.js'
import {POLICY_PATH} from './policy.js'

const {values} = parseArgs({
  options: {
    'test-mode': {type: 'boolean', default: false},
    address: {type: 'string'},
    'idle-timeout': {type: 'string', default: '120'},
    cli: {type: 'string'},
    policy: {type: 'string', default: POLICY_PATH},
  },
  strict: true,
})

// In the extension this file is manager.js next to cli.js; in a checkout dist/src/helper/ is two levels below bin/run.js's dist.
const bundled = fileURLToPath(new URL('./cli.js', import.meta.url))
const checkout = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))
const script = values.cli ?? (existsSync(bundled) ? bundled : checkout)

await runServiceMain('MANAGER_FAILED', async () => {
  await runManager({
    address: values.address,
    testMode: values['test-mode'] === true,
    idleTimeoutMs: Number(values['idle-timeout']) * 1000,
    cli: {node: process.execPath, script, timeoutMs: 10 * 60_000},
    policyPath: values.policy!,
    watchDirs: ['/run/extensions', '/var/lib/extensions', '/etc/extensions', '/var/lib/sysext-helper'],
  })
})
