//! The ferrolab collaboration server. Not built yet: see `docs/collab.md`.
