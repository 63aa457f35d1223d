// Drives Debian's headless chromium (playwright-core, executablePath) through the live page and
// prints what it saw as one JSON line; tests/browser/main.rs asserts on it.
//
//   node page.mjs URL SCREENSHOT_PATH WINDOW...
//
// For each WINDOW in order it clicks the window's button and reads the table once the page shows
// that window. Then it filters by team "north", sorts by calls (descending), reads the ingest
// panel and saves a screenshot. Every page error and console error is collected: the test fails
// on any.
import { chromium } from "playwright-core";

const [url, screenshot, ...windows] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const errors = [];
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
});
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
  page.on("pageerror", (error) => errors.push("pageerror: " + error.message));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push("console: " + message.text() + " (" + message.location().url + ")");
  });
  page.on("requestfailed", (request) => errors.push("request failed: " + request.url()));
  const response = await page.goto(url, { waitUntil: "load" });
  seen.status = response.status();
  seen.title = await page.title();
  await page.waitForSelector("#status[data-updates]", { timeout: 30000 });

  const readRows = () =>
    page.$$eval("#managers tbody tr", (rows) =>
      rows.map((tr) => {
        const cells = {};
        for (const td of tr.querySelectorAll("td[data-col]")) {
          cells[td.dataset.col] = {
            text: td.textContent,
            value: td.dataset.value === undefined ? null : td.dataset.value,
            class: td.className,
            svg: td.querySelector("svg polyline") !== null,
          };
        }
        return { manager: tr.dataset.manager, cells };
      }),
    );
  // A render after `window` was asked for: the status names it and the update counter moved on.
  const waitForRender = async (window, after) => {
    await page.waitForFunction(
      ([w, n]) => {
        const s = document.querySelector("#status");
        return s.dataset.window === w && Number(s.dataset.updates) > n;
      },
      [window, after],
      { timeout: 30000 },
    );
  };
  const updates = () => page.$eval("#status", (s) => Number(s.dataset.updates));

  seen.initialWindow = await page.$eval("#status", (s) => s.dataset.window);
  seen.offered = await page.$$eval("#windows button", (buttons) => buttons.map((b) => b.dataset.window));
  seen.windows = {};
  for (const window of windows) {
    const before = await updates();
    await page.click(`#windows button[data-window="${window}"]`);
    await waitForRender(window, before);
    seen.windows[window] = {
      pressed: await page.$eval(`#windows button[data-window="${window}"]`, (b) => b.getAttribute("aria-pressed")),
      rows: await readRows(),
    };
  }

  await page.selectOption("#team", "north");
  seen.north = (await readRows()).map((r) => r.manager);
  await page.selectOption("#team", "");
  await page.click('#managers th[data-key="calls"]');
  seen.sortedByCalls = (await readRows()).map((r) => r.manager);
  seen.sortHeader = await page.$eval('#managers th[data-key="calls"]', (th) => th.getAttribute("aria-sort"));

  seen.ingest = {
    topics: await page.$$eval("#topics tbody tr", (rows) =>
      rows.map((tr) => ({
        topic: tr.dataset.topic,
        received: tr.querySelector('[data-col="received"]').textContent,
        rejected: tr.querySelector('[data-col="rejected"]').textContent,
      })),
    ),
    streams: await page.$$eval("#streams tbody tr", (rows) =>
      rows.map((tr) => ({ stream: tr.dataset.stream, applied: tr.querySelector('[data-col="applied"]').textContent })),
    ),
    rejects: await page.$$eval("#rejects tbody tr", (rows) => rows.map((tr) => tr.querySelector('[data-col="reason"]').textContent)),
    totals: await page.$eval("#ingest-totals", (p) => p.textContent),
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  seen.screenshot = screenshot;
} catch (error) {
  errors.push("driver: " + (error && error.stack ? error.stack : String(error)));
} finally {
  await browser.close();
}
seen.errors = errors;
process.stdout.write(JSON.stringify(seen) + "\n");
process.exit(errors.length ? 1 : 0);
