// Opens the demo page in headless Debian Chromium with every request off
// this machine refused (as offline), and prints as JSON what the page did:
// where its hls.js came from, whether it plays, and the banner it shows.
// `node demo.mjs URL`.

import { LOCAL, launch } from "./chromium.mjs";

const [url] = process.argv.slice(2);
if (!url) {
  console.error("usage: node demo.mjs URL");
  process.exit(2);
}

const browser = await launch([
  "--autoplay-policy=no-user-gesture-required",
]);
try {
  const context = await browser.newContext();
  const outside = [];
  await context.route((u) => !LOCAL.test(u.href), (route) => {
    outside.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(
    () => {
      const d = window.outpostDemo;
      return d && d.player !== undefined && ((d.playing && d.segments.length > 0) || d.banner);
    },
    null,
    { timeout: 30000, polling: 100 },
  );
  const report = await page.evaluate(() => {
    const d = window.outpostDemo;
    const banner = document.getElementById("banner");
    return {
      player: d.player,
      native: d.native,
      playing: d.playing,
      segments: d.segments.length,
      banner: banner.hidden ? null : banner.textContent,
      dashboard: document.getElementById("dashboard").href,
    };
  });
  report.outside = outside;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
