/** Renders progress events: ora spinners on a terminal, one plain line per step otherwise, nothing for --json. */
import type {Ora} from 'ora'
import type {Emit, ProgressEvent} from '../lifecycle/index.js'

/** ora is loaded only for a terminal: piped and --json runs skip its start-up cost. */
export async function createReporter(json: boolean, stream: NodeJS.WriteStream = process.stderr): Promise<Emit> {
  if (json) return () => {}
  if (!stream.isTTY) {
    return (event: ProgressEvent) => {
      // A failed step's cause is the error the command prints last: say it once.
      if (event.type === 'step-end') stream.write(`${event.ok ? 'ok' : 'FAILED'}: ${event.step} (${event.ms} ms)${event.ok && event.detail ? `: ${event.detail}` : ''}\n`)
      else if (event.type === 'warning') stream.write(`Warning: ${event.message}\n${event.hint ? `Hint: ${event.hint}\n` : ''}`)
      else if (event.type === 'info') stream.write(`${event.message}\n`)
    }
  }
  const {default: ora} = await import('ora')
  let spinner: Ora | undefined
  let label = ''
  return (event: ProgressEvent) => {
    switch (event.type) {
      case 'step-start':
        label = event.label
        spinner = ora({text: label, stream}).start()
        break
      case 'step-end': {
        const text = `${label} (${event.ms} ms)${event.ok && event.detail ? ` — ${event.detail}` : ''}`
        if (event.ok) spinner?.succeed(text)
        else spinner?.fail(text)
        spinner = undefined
        break
      }
      case 'warning':
        if (spinner) spinner.clear()
        stream.write(`⚠ ${event.message}\n${event.hint ? `  Hint: ${event.hint}\n` : ''}`)
        spinner?.render()
        break
      case 'info':
        if (spinner) spinner.info(event.message)
        else stream.write(`${event.message}\n`)
        break
    }
  }
}
