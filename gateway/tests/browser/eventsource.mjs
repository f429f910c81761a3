// Usage: node eventsource.mjs <page port> <events URL> <first text> <later text>...
//
// Serves a page on http://127.0.0.1:<page port>/ (another origin than the
// gateway: the stream is cross-origin, as from a real web app) that opens a
// native EventSource on <events URL> (credentials in the query string) and
// renders every `message.created` it gets into the DOM. Drives it in
// Debian's headless Chromium and reports to the Rust test on stdout, one
// line per milestone:
//   open         the stream is open (the test may post now)
//   got-first    <first text> is on the page (the test now restarts the gateway)
//   done {json}  every later text is on the page, each text exactly once,
//                after the browser reconnected by itself
// Exits non-zero on the first thing that is off (bounded waits).
import http from "node:http";
import { chromium } from "playwright-core";

const [pagePort, eventsUrl, firstText, ...laterTexts] = process.argv.slice(2);
if (!pagePort || !eventsUrl || !firstText || laterTexts.length === 0) {
  console.error("usage: node eventsource.mjs <page port> <events URL> <first text> <later text>...");
  process.exit(2);
}

const page_html = `<!doctype html>
<meta charset="utf-8">
<title>ProgressDB live thread</title>
<p id="state">connecting</p>
<ul id="messages"></ul>
<script>
  const opens = { n: 0 }, errors = { n: 0 };
  const es = new EventSource(${JSON.stringify(eventsUrl)});
  const state = document.getElementById("state");
  es.onopen = () => {
    opens.n++;
    document.body.dataset.opens = opens.n;
    state.textContent = "open";
  };
  es.onerror = () => {
    errors.n++;
    document.body.dataset.errors = errors.n;
    // readyState 0: reconnecting by itself; 2: given up for good
    document.body.dataset.readyState = es.readyState;
    state.textContent = es.readyState === 2 ? "closed" : "reconnecting";
  };
  es.addEventListener("message.created", (e) => {
    const ev = JSON.parse(e.data);
    const li = document.createElement("li");
    li.textContent = ev.data.body.text;
    li.dataset.eventId = e.lastEventId;
    li.dataset.author = ev.data.author;
    li.dataset.thread = ev.thread;
    document.getElementById("messages").append(li);
  });
</script>
`;

const server = http.createServer((req, res) => {
  if (req.url === "/" || req.url === "/index.html") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(page_html);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((ok, fail) => {
  server.once("error", fail);
  server.listen(Number(pagePort), "127.0.0.1", ok);
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // No sandbox as root; no background traffic (the machine has no internet).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let exitCode = 0;
try {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  const failWith = async (what) => {
    const body = await page.locator("body").innerHTML().catch(() => "?");
    throw new Error(`${what}\npage: ${body}\nconsole:\n${consoleLines.join("\n")}`);
  };

  await page.goto(`http://127.0.0.1:${pagePort}/`);
  try {
    await page.waitForFunction(() => Number(document.body.dataset.opens || 0) >= 1, null, { timeout: 30_000 });
  } catch {
    await failWith("the EventSource did not open within 30 s");
  }
  console.log("open");

  const li = (text) => page.locator("#messages li", { hasText: text });
  try {
    await li(firstText).first().waitFor({ timeout: 20_000 });
  } catch {
    await failWith(`"${firstText}" did not appear within 20 s of the stream opening`);
  }
  console.log("got-first");

  // The test now stops the gateway (the stream ends), writes while it is
  // down, starts it again and writes once more: the page must reconnect by
  // itself (Last-Event-ID) and show everything it missed.
  for (const t of laterTexts) {
    try {
      await li(t).first().waitFor({ timeout: 90_000 });
    } catch {
      await failWith(`"${t}" did not appear within 90 s (did the EventSource reconnect and resume?)`);
    }
  }
  const items = await page.locator("#messages li").evaluateAll((els) =>
    els.map((e) => ({ text: e.textContent, id: e.dataset.eventId, author: e.dataset.author, thread: e.dataset.thread })));
  const counts = await page.evaluate(() => ({
    opens: Number(document.body.dataset.opens || 0),
    errors: Number(document.body.dataset.errors || 0),
    readyState: Number(document.body.dataset.readyState ?? -1),
  }));
  const texts = items.map((i) => i.text);
  const want = [firstText, ...laterTexts];
  if (JSON.stringify(texts) !== JSON.stringify(want)) {
    await failWith(`messages on the page ${JSON.stringify(texts)}, expected exactly ${JSON.stringify(want)} in order`);
  }
  const ids = items.map((i) => Number(i.id));
  if (!ids.every((id, k) => Number.isInteger(id) && id > 0 && (k === 0 || id > ids[k - 1]))) {
    await failWith(`event ids not increasing: ${JSON.stringify(ids)}`);
  }
  if (counts.opens < 2 || counts.errors < 1) {
    await failWith(`expected a reconnect (opens >= 2, errors >= 1), saw ${JSON.stringify(counts)}`);
  }
  console.log(`done ${JSON.stringify({ items, ...counts })}`);
} catch (e) {
  console.error(String(e && e.stack || e));
  exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
process.exit(exitCode);
