import type {RuleSet} from './context.js'

export const unitsRules: RuleSet = {
  rules: {},
  check: () => [],
}
