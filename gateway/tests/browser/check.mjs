// Usage: node check.mjs <gateway base URL> <screenshot dir>
// Exercises the docs page and the admin viewer like a person would, in
// Debian's headless Chromium; exits non-zero on the first thing that is off.
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // No sandbox as root; no background traffic (the machine has no internet).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const failed = [];
  page.on("requestfailed", r => failed.push(r.url()));

  // Docs: the route list is rendered from /openapi.json by the page's script.
  await page.goto(`${base}/docs/`);
  await page.locator("details summary code", { hasText: "/v1/messages/{id}/versions" }).first().waitFor();
  await page.locator("details summary code", { hasText: "/v1/threads/{thread}/members/{user}" }).first().waitFor();
  await page.locator("details summary code", { hasText: "/v1/threads/{thread}/read" }).first().waitFor();
  await page.locator("details.schema summary code", { hasText: "ReadState" }).first().waitFor();
  const routes = await page.locator("details:not(.schema)").count();
  if (routes < 38) throw new Error(`docs page lists ${routes} operations`);
  await page.screenshot({ path: `${shots}/docs.png` });

  // Viewer: type the admin key, load, open the thread, open the message's versions.
  await page.goto(`${base}/viewer/`);
  await page.fill("#key", "admin_example");
  await page.click("#load");
  await page.locator("#stats", { hasText: "1 threads · 1 messages" }).waitFor();
  await page.locator("#threads .item", { hasText: "general" }).click();
  const msg = page.locator("#messages .item", { hasText: "Hello again" });
  await msg.waitFor();
  await msg.click();
  await page.locator("#versions .item", { hasText: "v1" }).waitFor();
  await page.locator("#versions .item", { hasText: "v2" }).waitFor();
  const versions = await page.locator("#versions pre").allTextContents();
  if (!versions[0].includes("Hello") || !versions[1].includes("Hello again")) {
    throw new Error(`versions shown: ${JSON.stringify(versions)}`);
  }
  await page.screenshot({ path: `${shots}/viewer.png` });

  // A wrong key shows the error instead of data.
  await page.fill("#key", "nope");
  await page.click("#load");
  await page.locator("#threads .err", { hasText: "401" }).waitFor();

  if (failed.length) throw new Error(`requests failed: ${failed.join(", ")}`);
  console.log(`browser checks passed (${routes} documented operations)`);
} finally {
  await browser.close();
}
