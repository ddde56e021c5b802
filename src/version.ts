// retrace's version, read once from package.json (outside rootDir, so required, not imported).
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const VERSION: string = (require('../package.json') as { version: string }).version;
