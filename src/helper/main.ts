#!/usr/bin/env node
/**
 * Entry point of the monitor helper service (started by D-Bus activation
 * through systemd). Options: --test-mode --address ADDR (private bus, no
 * polkit, not as root), --idle-timeout S, --max-per-uid N, --max-total N,
 * --max-duration S.
 */
import {parseArgs} from 'node:util'
import {runServiceMain} from './bus-service.js'
import {runService} from './service.js'

const {values} = parseArgs({
  options: {
    'test-mode': {type: 'boolean', default: false},
    address: {type: 'string'},
    'idle-timeout': {type: 'string', default: '120'},
    'max-per-uid': {type: 'string'},
    'max-total': {type: 'string'},
    'max-duration': {type: 'string'},
  },
  strict: true,
})

const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v))

await runServiceMain('HELPER_FAILED', async () => {
  await runService({
    address: values.address,
    testMode: values['test-mode'] === true,
    idleTimeoutMs: Number(values['idle-timeout']) * 1000,
    limits: Object.fromEntries(
      Object.entries({perUid: num(values['max-per-uid']), total: num(values['max-total']), maxDurationSeconds: num(values['max-duration'])}).filter(([, v]) => v !== undefined),
    ),
  })
})
