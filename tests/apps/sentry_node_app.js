// A small service on the real @sentry/node, run by tests/test_sentry_intake.py.
//   node sentry_node_app.js SENTRY_NODE_DIR DSN COUNT
// One TypeError with a breadcrumb and a tag, then COUNT more raises of the same bug. The
// Dedupe integration is left out: it would drop the storm's repeats before they are sent.
const Sentry = require(require("path").join(process.argv[2], "node_modules", "@sentry/node"));
const { total } = require("./cart");

Sentry.init({
  dsn: process.argv[3],
  release: "4f2a9c1e",
  environment: "prod",
  integrations: (defaults) => defaults.filter((i) => i.name !== "Dedupe"),
  transportOptions: { bufferSize: 10000 },
});
Sentry.setTag("region", "eu");
Sentry.addBreadcrumb({ category: "cart", message: "added sku 42", level: "info" });
const count = Number(process.argv[4] || "1");
for (let n = 0; n < count; n += 1) {
  try {
    total({ price: 3 });
  } catch (err) {
    Sentry.captureException(err);
  }
}
Sentry.flush(20000).then((done) => process.exit(done ? 0 : 3));
