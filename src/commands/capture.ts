import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {type CaptureRequest, type CaptureResult, captureBus, renderCaptureSummary} from '../capture/index.js'
import {usageError} from '../errors.js'

const secondsFlag = Flags.custom<number>({
  parse: async (value) => {
    const n = Number(value)
    if (!Number.isFinite(n) || n <= 0) throw usageError('INVALID_DURATION', `Invalid duration '${value}'.`, 'Give a number of seconds, e.g. --duration 30 or --duration 0.5.')
    return n
  },
})

export default class Capture extends BaseCommand {
  static summary = 'Capture D-Bus traffic as pcap (a drop-in for dbus-monitor --pcap).'
  static description = `Writes every message seen on the bus to a classic pcap file (link type 231), readable by Wireshark, tshark and Bustle.
The capture runs in this process when it may monitor the bus (the session bus, the system bus as root, an --address it owns); the system bus as a normal user goes through the sysext-helper monitor service, which asks polkit.
Exit status: 0 when the capture ended normally, 126 when the authentication dialog was dismissed, 127 when not authorized, 1 for other errors, 2 for usage errors.`
  static examples = [
    '<%= config.bin %> capture --system --output - | wireshark -k -i -',
    '<%= config.bin %> capture --session --output trace.pcap --duration 10',
    "<%= config.bin %> capture --system --match \"type='signal'\" --max-bytes 10000000 --output trace.pcap --json",
  ]
  static flags = {
    system: Flags.boolean({description: 'Capture the system bus', exclusive: ['session', 'address']}),
    session: Flags.boolean({description: 'Capture the session bus (the default)', exclusive: ['system', 'address']}),
    address: Flags.string({description: 'Capture the bus at this address (unix:path=...)', exclusive: ['system', 'session']}),
    output: Flags.string({char: 'o', description: "Write the pcap here; '-' for standard output (never a terminal)", default: '-'}),
    match: Flags.string({description: 'Only capture messages matching this rule (repeatable; none = everything)', multiple: true}),
    duration: secondsFlag({description: 'Stop after this many seconds'}),
    'max-bytes': Flags.integer({description: 'Stop before the output would exceed this many bytes', min: 24}),
    'initial-state': Flags.boolean({description: 'Record ListNames/GetNameOwner replies at the start, as Bustle expects', default: true, allowNo: true}),
    'buffer-size': Flags.integer({description: 'Bytes to hold for a slow reader before --on-overflow applies', min: 65_536, default: 16 * 1024 * 1024}),
    'via-helper': Flags.boolean({description: 'Capture through the monitor service even when this process may monitor the bus (on --address/--session: the service on that bus)'}),
    'on-overflow': Flags.string({description: 'When the reader cannot keep up: drop messages (counted) or abort', options: ['drop', 'abort'], default: 'drop'}),
  }

  private toStdout = true

  async run(): Promise<CaptureResult> {
    const {flags} = await this.parse(Capture)
    this.toStdout = flags.output === '-'
    const request: CaptureRequest = {
      bus: flags.address !== undefined ? {address: flags.address} : flags.system ? 'system' : 'session',
      output: flags.output,
      matchRules: flags.match ?? [],
      durationMs: flags.duration === undefined ? undefined : Math.round(flags.duration * 1000),
      maxBytes: flags['max-bytes'],
      initialState: flags['initial-state'],
      bufferBytes: flags['buffer-size'],
      overflow: flags['on-overflow'] as 'drop' | 'abort',
      viaHelper: flags['via-helper'],
    }
    const result = await captureBus(request)
    if (!this.jsonEnabled()) process.stderr.write(renderCaptureSummary(result))
    return result
  }

  /** The pcap may be on stdout: the summary and errors go to stderr then. */
  protected logJson(json: unknown): void {
    if (this.toStdout) process.stderr.write(`${JSON.stringify(json, null, 2)}\n`)
    else super.logJson(json)
  }
}
