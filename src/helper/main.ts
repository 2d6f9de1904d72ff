#!/usr/bin/env node
/**
 * Entry point of the monitor helper service (started by D-Bus activation
 * through systemd). Options: --test-mode --address ADDR (private bus, no
 * polkit, not as root), --idle-timeout S, --max-per-uid N, --max-total N,
 * --max-duration S.
 */
import {parseArgs} from 'node:util'
import {HelperError} from '../errors.js'
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

// A crash must leave a trace in the journal; the unit's restart-on-activation brings the service back.
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    process.stderr.write(`fatal: ${(err as Error)?.stack ?? String(err)}\n`)
    process.exit(1)
  })
}

const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v))

try {
  await runService({
    address: values.address,
    testMode: values['test-mode'] === true,
    idleTimeoutMs: Number(values['idle-timeout']) * 1000,
    limits: Object.fromEntries(
      Object.entries({perUid: num(values['max-per-uid']), total: num(values['max-total']), maxDurationSeconds: num(values['max-duration'])}).filter(([, v]) => v !== undefined),
    ),
  })
  process.exit(0)
} catch (err) {
  const e = err instanceof HelperError ? err : new HelperError('HELPER_FAILED', (err as Error).message)
  process.stderr.write(`Error: ${e.message}\n${e.hint ? `Hint: ${e.hint}\n` : ''}`)
  process.exit(e.exit)
}
