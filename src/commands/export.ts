import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {usageError} from '../errors.js'
import {type ExportFormat, type ExportResult, exportExtension} from '../lifecycle/index.js'

export default class Export extends BaseCommand {
  static summary = 'Write an extension tree as a tarball (for importctl import-tar --class=sysext).'
  static description = `NAME is an extension sysext-helper manages (its installed tree is exported); PATH is any extension tree. Entries are owned by root with the tree's modes and symlinks, top-level entries usr/ (and opt/).`
  static examples = [
    '<%= config.bin %> export org.gnome.Sysprof --format tar --output sysprof.tar',
    '<%= config.bin %> export ./dist/extension --output - | importctl import-tar --class=sysext - sysext-helper',
  ]
  static args = {source: Args.string({description: 'Managed extension NAME or extension tree PATH', required: true})}
  static flags = {
    format: Flags.string({options: ['tar'], default: 'tar', description: 'Archive format'}),
    output: Flags.string({char: 'o', description: "File to write (default: NAME.tar); '-' writes to stdout"}),
  }

  async run(): Promise<ExportResult> {
    const {args, flags} = await this.parse(Export)
    if (flags.output === '-' && this.jsonEnabled())
      throw usageError('USAGE', '--output - and --json both write to stdout.', 'Write the tarball to a file with --output FILE.')
    if (flags.output === '-' && process.stdout.isTTY)
      throw usageError('USAGE', 'Refusing to write a tarball to a terminal.', 'Redirect stdout, or use --output FILE.')
    const result = await exportExtension(args.source, {format: flags.format as ExportFormat, output: flags.output})
    if (!this.jsonEnabled() && result.output !== '-')
      this.log(`Exported ${result.name} (${result.source.tree}) to ${result.output}: ${result.entries} entries, ${result.bytes} bytes.`)
    return result
  }
}
