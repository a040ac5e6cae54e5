// The engine's Worker: loads the wasm, then hands it every message from the page.
// Messages that arrive while the wasm loads and saved torrents are restored wait in a queue.
import init, { start, command } from '/pkg/web.js';

const queue = [];
let running = false;

self.onmessage = (event) => {
  if (running) command(event.data);
  else queue.push(event.data);
};

try {
  await init();
  await start();
  running = true;
  for (const msg of queue.splice(0)) command(msg);
} catch (err) {
  self.postMessage({ type: 'fatal', message: `The engine could not start: ${err?.message ?? err}` });
}
