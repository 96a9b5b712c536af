// The man pages (man/*.[18]): each renders with groff without a warning, and
// names exactly the flags its program's --help lists (so neither can drift);
// the services' pages also name each option's IMB_* variable. `make install`
// placing them is checked in deploy.test.mjs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { binPath, REPO_ROOT } from '../harness/index.mjs';

const PAGES = { 'imb-edge': 'imb-edge.8', 'imb-xmppd': 'imb-xmppd.8', imcat: 'imcat.1', imtap: 'imtap.1' };
const noGroff = spawnSync('sh', ['-c', 'command -v groff'], { stdio: 'ignore' }).status === 0 ? false
  : 'groff is not installed (apt-get install groff-base; scripts/deps.sh does it)';

/** The page as plain text (ASCII, no overstrike or escapes). */
function render(file) {
  const r = spawnSync('groff', ['-man', '-Tascii', '-P-cbou', '-rLL=200n', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** The --long flags in text (and -h). */
function flags(text) {
  return new Set([...text.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-h)(?![\w-])/g)].map((m) => m[1]));
}

for (const [prog, page] of Object.entries(PAGES)) {
  const file = path.join(REPO_ROOT, 'man', page);

  test(`man/${page}: groff -man -ww renders it without a warning`, { skip: noGroff }, () => {
    const r = spawnSync('groff', ['-man', '-ww', '-z', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', r.stderr);
    const text = render(file);
    for (const s of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'ENVIRONMENT', 'FILES', 'SIGNALS',
      'EXIT STATUS', 'SEE ALSO'])
      assert.match(text, new RegExp(`^${s}$`, 'm'), `${page} has a ${s} section`);
  });

  test(`man/${page} names every flag of ${prog} --help, and no other`, { skip: noGroff }, () => {
    const help = spawnSync(binPath(prog), ['--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0, help.stderr);
    const want = flags(help.stdout);
    const text = render(file);
    const got = flags(text);
    // Accepted though --help does not list itself; the services' pages
    // write --OPTION and --name for "any option".
    for (const f of ['--help', '-h']) want.add(f);
    for (const f of ['--OPTION', '--name']) { got.delete(f); want.delete(f); }
    const missing = [...want].filter((f) => !got.has(f));
    const extra = [...got].filter((f) => !want.has(f));
    console.log(`# ${page}: ${want.size} flags in --help, ${got.size} in the page; missing ${missing.length}, extra ${extra.length}`);
    assert.deepEqual(missing, [], `${page} lacks ${missing.join(' ')}`);
    assert.deepEqual(extra, [], `${page} names flags ${prog} does not have: ${extra.join(' ')}`);
    if (prog.startsWith('imb-')) {
      // Every option's variable: --max-frame is IMB_MAX_FRAME.
      const vars = [...want].filter((f) => !['--config', '--check-config', '--version', '--help', '-h'].includes(f))
        .map((f) => `IMB_${f.slice(2).replace(/-/g, '_').toUpperCase()}`);
      const lacking = vars.filter((v) => !new RegExp(`\\b${v}\\b`).test(text));
      assert.deepEqual(lacking, [], `${page} lacks ${lacking.join(' ')}`);
    }
  });
}
