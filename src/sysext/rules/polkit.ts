import type {RuleSet} from './context.js'

export const polkitRules: RuleSet = {
  rules: {},
  check: () => [],
}
