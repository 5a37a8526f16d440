// drive.mjs runs headless Chromium (Debian's, never a downloaded one) for
// conformance/browser_test.go, which writes commands to its stdin and
// reads what happened from its stdout, one JSON object a line each way.
//
// Commands: {seq, cmd, page, ...}
//   open     {url}                 open a tab named page at url
//   call     {fn, args}            await window[fn](...args) in the tab
//   fill     {selector, value}     type value into the element
//   click    {selector}            click the element
//   waitText {selector, text}      wait for an element with that text
//   texts    {selector}            textContent of every matching element
// Each gets a reply: {reply: seq, value} or {reply: seq, error}.
// Pages report events with window.report({event, ...}); they are printed
// as {page, event, ...}, as are console lines and uncaught page errors.
// End of stdin closes the browser and exits.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// Bounds one command's wait (the Go side has its own deadlines too).
const commandTimeout = Number(process.env.COMMAND_TIMEOUT_MS || 20000);

const print = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  timeout: commandTimeout,
});
const context = await browser.newContext();
context.setDefaultTimeout(commandTimeout);
const pages = new Map(); // name -> Page
const names = new Map(); // Page -> name
await context.exposeBinding('report', ({ page }, ev) => {
  print({ ...ev, page: names.get(page) });
});

async function run(c) {
  if (c.cmd === 'open') {
    const page = await context.newPage();
    pages.set(c.page, page);
    names.set(page, c.page);
    page.on('console', (m) => print({ page: c.page, event: 'console', text: `${m.type()}: ${m.text()}` }));
    page.on('pageerror', (e) => print({ page: c.page, event: 'pageerror', text: String(e) }));
    page.on('response', (r) => {
      if (r.status() >= 400) print({ page: c.page, event: 'http', text: `${r.status()} ${r.url()}` });
    });
    const resp = await page.goto(c.url);
    return resp ? resp.status() : null;
  }
  const page = pages.get(c.page);
  if (!page) throw new Error(`no page named ${c.page}`);
  switch (c.cmd) {
    case 'call':
      return await page.evaluate(([fn, args]) => window[fn](...args), [c.fn, c.args || []]);
    case 'fill':
      return await page.locator(c.selector).fill(c.value);
    case 'click':
      return await page.locator(c.selector).click();
    case 'waitText':
      return await page.locator(c.selector).filter({ hasText: c.text }).first().waitFor();
    case 'texts':
      return await page.locator(c.selector).allTextContents();
  }
  throw new Error(`unknown command ${c.cmd}`);
}

// Commands run one after the other, in the order they came.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let c;
    try {
      c = JSON.parse(line);
      const value = await run(c);
      print({ reply: c.seq, value: value === undefined ? null : value });
    } catch (e) {
      print({ reply: c ? c.seq : -1, error: String(e && e.message ? e.message : e) });
    }
  });
});
lines.on('close', () => {
  queue.then(() => browser.close()).finally(() => process.exit(0));
});
print({ event: 'launched', version: browser.version() });
