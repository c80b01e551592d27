// automerge-repo sends a document's changes to its peers from a 100 ms timer,
// not an option it exposes, which puts tens of ms on every keystroke a
// collaborator sees. The labextension's build changes how the changes are sent
// (sync-rate-loader.js) and fails if the library no longer has that code.
const path = require('path');

module.exports = {
  module: {
    rules: [
      {
        test: /automerge-repo[\\/]dist[\\/]synchronizer[\\/]DocSynchronizer\.js$/,
        use: [{ loader: path.resolve(__dirname, 'sync-rate-loader.js') }]
      }
    ]
  }
};
