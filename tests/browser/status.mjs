// Opens the admin dashboard (/status) in headless Debian Chromium, waits
// for its charts to be drawn, keeps a screenshot, and prints what the page
// shows as JSON: `node status.mjs URL SCREENSHOT.png`.
//
// Printed: for each chart, its points and each series' values as drawn
// (`data-values` of its polyline), and the rows of the top-streams tables.

import { LOCAL, launch } from "./chromium.mjs";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node status.mjs URL SCREENSHOT.png");
  process.exit(2);
}

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  // Self-contained: any request off this machine is refused, and counted.
  const outside = [];
  await context.route((u) => !LOCAL.test(u.href), (route) => {
    outside.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(
    () => document.body.dataset.refreshed && Number(document.getElementById("chart-requests").dataset.points) > 0,
    null,
    { timeout: 20000 },
  );
  const report = await page.evaluate(() => ({
    charts: Object.fromEntries([...document.querySelectorAll("svg[id^=chart-]")].map((svg) => [
      svg.id.replace("chart-", ""),
      {
        points: Number(svg.dataset.points),
        series: Object.fromEntries([...svg.querySelectorAll("polyline")].map((line) => [
          line.dataset.series,
          JSON.parse(line.dataset.values),
        ])),
      },
    ])),
    byViewers: [...document.querySelectorAll("#by-viewers tr")].map((tr) => [...tr.cells].map((td) => td.textContent)),
    byBytes: [...document.querySelectorAll("#by-bytes tr")].map((tr) => [...tr.cells].map((td) => td.textContent)),
    offload: document.getElementById("offload").textContent,
  }));
  await page.screenshot({ path: screenshot, fullPage: true });
  report.outside = outside;
  report.errors = errors;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
