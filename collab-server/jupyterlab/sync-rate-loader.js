// See rspack.config.js. automerge-repo hands a document's changes to its peers
// from a timer (`asyncThrottle`, 100 ms): even when nothing was sent for a while,
// a keystroke waits for the timer, and the browser draws the page (JupyterLab
// with hundreds of cells: tens of ms) before the timer fires. Here the first
// change after a quiet spell is sent on a microtask, before the page is drawn;
// changes that follow within SYNC_RATE_MS are folded into one message sent when
// the interval is over, so fast typing still costs few messages.
const SYNC_RATE_MS = 16;

const THROTTLE = `
const ferrolabSoon = (fn, delay) => {
  let last = 0;
  let pending = false;
  const run = () => {
    pending = false;
    last = Date.now();
    void fn();
  };
  return () => {
    if (pending) {
      return;
    }
    pending = true;
    const wait = last + delay - Date.now();
    if (wait <= 0) {
      queueMicrotask(run);
    } else {
      setTimeout(run, wait);
    }
  };
};
`;

const ORIGINAL = 'handle.on("change", asyncThrottle(() => this.#syncWithPeers(), this.syncDebounceRate));';
const REPLACED = `handle.on("change", ferrolabSoon(() => this.#syncWithPeers(), ${SYNC_RATE_MS}));`;

module.exports = function (source) {
  if (!source.includes(ORIGINAL)) {
    throw new Error(
      "automerge-repo's DocSynchronizer no longer sends changes through asyncThrottle; revisit sync-rate-loader.js"
    );
  }
  return THROTTLE + source.replace(ORIGINAL, REPLACED);
};
