// Lint: ESLint's and typescript-eslint's recommended sets, nothing more (`npm run lint`, part of `npm test`).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  {ignores: ['dist/', 'node_modules/', 'oclif.manifest.json']},
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {files: ['**/*.cjs'], languageOptions: {sourceType: 'commonjs', globals: {module: 'writable', require: 'readonly'}}},
  {
    rules: {
      // Best-effort cleanup (`try { rm } catch {}`) is deliberate; an empty block elsewhere is not.
      'no-empty': ['error', {allowEmptyCatch: true}],
      // A variable that closures read before it is set can't be const.
      'prefer-const': ['error', {ignoreReadBeforeAssign: true}],
      // `_name` marks a parameter an interface requires but this implementation does not use.
      '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_', caughtErrors: 'none'}],
    },
  },
)
