import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {renderValidation} from '../cli/render.js'
import {type ValidationReport, validate} from '../sysext/index.js'
import {allowFlag, nameFlag} from '../cli/flags.js'

export default class Validate extends BaseCommand {
  static summary = 'Check an extension tree or an installed Flatpak app against this host.'
  static description = `Judges the tree as it stands: exit 0 when the host would merge it and it would work (warnings allowed), 1 when it has errors, 2 for usage errors.`
  static examples = [
    '<%= config.bin %> validate ./build/files/lib/extensions --name org.gnome.Sysprof',
    '<%= config.bin %> validate org.gnome.Sysprof',
    '<%= config.bin %> validate org.freedesktop.Bustle --host-root /srv/images/debian-13 --json',
  ]
  static args = {
    target: Args.string({description: 'Extension tree (the directory holding usr/) or a Flatpak app id', required: true}),
  }
  static flags = {
    name: nameFlag,
    installation: Flags.string({description: 'Look the app up only in this system installation (a path)'}),
    'host-root': Flags.string({description: 'Judge against the system in this directory instead of the running host'}),
    strict: Flags.boolean({description: 'Treat warnings as errors'}),
    allow: allowFlag,
  }

  async run(): Promise<ValidationReport> {
    const {args, flags} = await this.parse(Validate)
    const {report} = validate(args.target, {
      name: flags.name,
      installationPath: flags.installation,
      hostRoot: flags['host-root'],
      strict: flags.strict,
      allow: flags.allow,
    })
    if (!this.jsonEnabled()) process.stdout.write(renderValidation(report))
    if (!report.ok) process.exitCode = 1
    return report
  }
}
