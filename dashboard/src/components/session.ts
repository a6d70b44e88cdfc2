// The signed-in operator: the API client for their token and what the server says the token is (whoami).
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Api } from "../api/client";
import { may, type Role, type WhoAmI } from "../api/types";

export interface Session {
  api: Api;
  who: WhoAmI;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a session");
  return s;
}

/** Whether the signed-in token's role is at least `role` (what the UI offers; the server decides). */
export function useMay(role: Role): boolean {
  return may(useSession().who.role, role);
}

const KEY = "esp32-ota.token";

/** The token, kept for this browser tab only (sessionStorage: gone when the tab closes, never sent in a URL). */
export const savedToken = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (token: string) => sessionStorage.setItem(KEY, token),
  clear: () => sessionStorage.removeItem(KEY),
};
