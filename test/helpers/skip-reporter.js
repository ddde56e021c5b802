/**
 * Jest reporter: ends every run with one line naming each skipped (or todo) test and why (a test
 * skipped for a missing tool carries the reason in its title, see test/helpers/tools.ts).
 * Under CI=true a skipped test fails the run: CI must run everything.
 */
const fs = require('node:fs');

class SkipReporter {
  constructor() {
    this.error = undefined;
  }

  onRunComplete(_contexts, results) {
    const skipped = [];
    for (const file of results.testResults) {
      const rel = file.testFilePath.replace(/^.*?\/test\//, 'test/');
      for (const t of file.testResults) {
        if (t.status === 'pending' || t.status === 'skipped' || t.status === 'todo' || t.status === 'disabled') {
          skipped.push(`${rel}: ${t.fullName}${t.status === 'todo' ? ' [todo]' : ''}`);
        }
      }
    }
    // Printed at exit, after jest's own summary, so these are the run's last two lines: the
    // plain count line that CI tooling reads whatever the runner, then the skipped tests.
    const r = results;
    // A suite that could not run (a compile error, a throw outside any test) has no failed test:
    // named on the count line so "0 failed" never hides it.
    const broken = results.testResults.filter((f) => f.testExecError !== undefined && f.testExecError !== null);
    const suites =
      broken.length === 0 ? '' : `, ${broken.length} suite(s) failed to run: ${broken.map((f) => f.testFilePath.replace(/^.*?\/test\//, 'test/')).join(' ')}`;
    const lines =
      `tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped${suites}\n` +
      (skipped.length === 0 ? 'skipped: none\n' : `skipped: ${skipped.length} test(s): ${skipped.join(' | ')}\n`);
    process.once('exit', () => fs.writeSync(2, lines));
    if (skipped.length === 0) return;
    const ci = process.env.CI === 'true' || process.env.CI === '1';
    if (ci) this.error = new Error(`${skipped.length} test(s) skipped under CI=true; CI must run every test`);
  }

  getLastError() {
    return this.error;
  }
}

module.exports = SkipReporter;
