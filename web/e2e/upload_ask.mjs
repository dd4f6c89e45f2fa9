// The web UI in headless Chromium (Debian's, driven by playwright-core; no
// browser is downloaded): drop a file on the upload area, wait until it is
// indexed, ask a question about it, and check the streamed answer, its
// citation and the prior/posterior chart. Screenshots go to OUT_DIR.
//
// usage: node upload_ask.mjs URL WRITE_KEY OUT_DIR
// The server at URL must be ready (see crates/margin-cli/tests/serve_api.rs).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [url, key, outDir] = process.argv.slice(2);
if (!url || !key || !outDir) {
  console.error("usage: node upload_ask.mjs URL WRITE_KEY OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const TEXT = "The Zorblax festival is held every June in the town of Quillmere. " +
  "During the festival, people race snails across the old stone bridge.";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Without these, Chromium keeps calling hosts this sandbox cannot reach.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${url}/#key=${encodeURIComponent(key)}`);
  // The key moved from the address bar into the key field.
  assert.equal(new URL(page.url()).hash, "");
  assert.equal(await page.inputValue("#api-key"), key);

  // Every control has a label.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => !el.labels?.length && !el.getAttribute("aria-label"))
      .map((el) => el.id));
  assert.deepEqual(unlabelled, []);

  // Drop a file on the upload area.
  const dataTransfer = await page.evaluateHandle((text) => {
    const dt = new DataTransfer();
    dt.items.add(new File([text], "zorblax.txt", { type: "text/plain" }));
    return dt;
  }, TEXT);
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
  await page.waitForSelector('#uploads li[data-state="indexed"]', { timeout: 120_000 });
  assert.match(await page.textContent("#uploads li"), /zorblax\.txt.*indexed: 1 passages/s);
  await page.waitForSelector('#documents li:has-text("zorblax")');

  // Ask with the keyboard: type, choose three passages, press Enter.
  await page.focus("#question");
  await page.keyboard.type("When is the Zorblax festival held?");
  await page.fill("#n-docs", "3");
  await page.focus("#question");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "Done.", null, { timeout: 240_000 });
  const status = await page.textContent("#status");
  assert.equal(status, "Done.");
  const answer = await page.textContent("#answer");
  assert.match(answer, /June/, `answer: ${answer}`);
  const first = await page.textContent("#citations li:first-child");
  assert.match(first, /zorblax/, `first citation: ${first}`);
  assert.equal(await page.locator("#citations li").count(), 3);
  assert.equal(await page.locator("#chart svg rect.bar").count(), 6);
  await page.screenshot({ path: `${outDir}/ask-light.png`, fullPage: true });

  await page.click("#theme");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");
  await page.screenshot({ path: `${outDir}/ask-dark.png`, fullPage: true });
  assert.deepEqual(errors, []);
  console.log(`web UI test passed; screenshots in ${outDir}`);
} finally {
  await browser.close();
}
