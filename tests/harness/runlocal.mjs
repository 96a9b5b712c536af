// `make run`'s script (scripts/run-local.sh) started by a test, as a user
// would, and its banner read back: the tests of the first ten minutes
// (run-local.test.mjs, browser.test.mjs).  Not exported by index.mjs.
import path from 'node:path';
import { BIN_DIR, portIsFree, REPO_ROOT } from './util.mjs';

/** A base port B with B..B+3 free (run-local.sh uses four ports from B). */
async function freeBase() {
  for (let i = 0; i < 200; i++) {
    const b = 20000 + Math.floor(Math.random() * 1000) * 10;
    let ok = true;
    for (let k = 0; k < 4 && ok; k++) ok = await portIsFree(b + k);
    if (ok) return b;
  }
  throw new Error('no four consecutive free ports found');
}

/**
 * startRunLocal(stack, {password, web=true, timeout}) -> {
 *   proc,          the run-local.sh Proc (stop it with SIGINT for a clean exit)
 *   ms,            time from spawn to the complete banner
 *   banner,        the banner text
 *   url,           the browser page's URL (null without a page)
 *   imcatPassword, the value of the banner's `export IMCAT_PASSWORD=` line
 *   imcatArgv,     the banner's imcat command, split into words
 *   edgePort, caFile, password, runDir }
 * Ports: a random free block; temp dir: one of the stack's; binaries:
 * IMB_TEST_BIN_DIR's (IMB_RUN_BIN_DIR).
 */
export async function startRunLocal(stack, { password, web = true, timeout = 60000 } = {}) {
  const base = await freeBase();
  const tmp = stack.tempDir('imb-runlocal-');
  const envExtra = {
    TMPDIR: tmp,
    IMB_RUN_PORT: String(base),
    IMB_RUN_BIN_DIR: BIN_DIR,
    IMB_RUN_TIMEOUT: '20',
    IMB_RUN_WEB: web ? '1' : '0',
  };
  if (password) envExtra.IMB_RUN_PASSWORD = password;
  const t0 = Date.now();
  const proc = stack.spawn('run-local.sh', 'bash', [path.join(REPO_ROOT, 'scripts', 'run-local.sh')], {
    cwd: tmp, envExtra,
  });
  // The banner ends with the Ctrl-C line (npm ci may run first, once).
  await proc.nextStdoutLine((l) => /^Ctrl-C stops everything/.test(l), timeout);
  const ms = Date.now() - t0;
  const banner = proc.stdout;
  const grab = (re) => re.exec(banner)?.[1] ?? null;
  const cmd = grab(/^\s+(\S*imcat --host .*)$/m);
  if (!cmd) throw new Error(`no imcat command in the banner:\n${banner}`);
  const imcatArgv = cmd.trim().split(/\s+/);
  const arg = (flag) => imcatArgv[imcatArgv.indexOf(flag) + 1];
  return {
    proc,
    ms,
    banner,
    url: grab(/open (http:\/\/\S+)/),
    imcatPassword: grab(/export IMCAT_PASSWORD=(\S+)/),
    imcatArgv,
    edgePort: Number(arg('--port')),
    caFile: arg('--cafile'),
    password: grab(/password (\S+), all contacts/),
    runDir: grab(/stops everything and removes (\S+?)\.?$/m),
  };
}
