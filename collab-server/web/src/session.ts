// What every page of the workspace is given: the API, the repository, who is
// signed in, the index document, presence, and how to move between pages.
import type { Repo } from "@automerge/automerge-repo";
import type { Api, User } from "./api";
import type { PresenceChannel } from "./presence";

export interface Session {
  api: Api;
  repo: Repo;
  user: User;
  index: string;
  presence: PresenceChannel;
  root: HTMLElement;
  navigate(path: string): void;
  status(message: string, kind?: "info" | "error"): void;
}
