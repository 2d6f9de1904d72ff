import type {RuleSet} from './context.js'
import {confinementRules} from './confinement.js'
import {dbusRules} from './dbus.js'
import {executablesRules} from './executables.js'
import {filesRules} from './files.js'
import {layoutRules} from './layout.js'
import {polkitRules} from './polkit.js'
import {releaseRules} from './release.js'
import {unitsRules} from './units.js'
import {usersRules} from './users.js'

export const RULE_SETS: RuleSet[] = [releaseRules, layoutRules, confinementRules, filesRules, dbusRules, polkitRules, unitsRules, usersRules, executablesRules]

/** Every rule id with its description. */
export function allRules(): Record<string, string> {
  return Object.assign({}, ...RULE_SETS.map((set) => set.rules))
}
