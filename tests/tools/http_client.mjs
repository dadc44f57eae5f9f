// A real Node client for the kernel tests: node:http with its defaults (the global agent, keep-alive).
// node http_client.mjs http://ip:port N: GET /bytes/N, then POST N random bytes; one JSON line out.
import http from "node:http";
import crypto from "node:crypto";

const [base, count] = process.argv.slice(2);
const n = Number(count);

function get() {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}/bytes/${n}`, (res) => {
      const h = crypto.createHash("sha256");
      let received = 0;
      res.on("data", (d) => {
        h.update(d);
        received += d.length;
      });
      res.on(
        "end",
        () =>
          resolve({
            status: res.statusCode,
            received,
            sha256: h.digest("hex"),
            expected: res.headers["x-sha256"],
          }),
      );
      res.on("error", reject);
    });
    req.setTimeout(20000, () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

function post() {
  const body = crypto.randomBytes(n);
  const sha256 = crypto.createHash("sha256").update(body).digest("hex");
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/sha256`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": n },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => text += d);
      res.on("end", () => {
        try {
          resolve({ status: res.statusCode, sent: n, sha256, reply: JSON.parse(text) });
        } catch (e) {
          reject(e);
        }
      });
    });
    req.setTimeout(20000, () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end(body);
  });
}

try {
  const g = await get();
  const p = await post();
  console.log(JSON.stringify({ client: "node", get: g, post: p }));
} catch (e) {
  console.log(JSON.stringify({ client: "node", error: String(e) }));
}
// Keep-alive sockets would hold the process open.
process.exit(0);
